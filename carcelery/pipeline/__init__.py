"""What a run is made of: its shapes (``model``: Record, Run) and what is kept of
it in DynamoDB (``store``), the bucket's images, the ledger of what was sent, each
image's record, the run's deadline, and the outputs written from the records
(output.txt, results.jsonl, report.html, through their index) with what the run
cost; S3's event messages read, and made runs of (``events``, ``stream``)."""
