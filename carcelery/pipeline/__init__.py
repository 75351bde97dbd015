"""What a run is made of: the bucket's images, the ledger of what was sent, each
image's record, the run's deadline, and the outputs written from the records
(output.txt, results.jsonl, report.html) with what the run cost."""
