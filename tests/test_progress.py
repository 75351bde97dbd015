import io

from carcelery.pipeline.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_on_a_terminal():
    out = Terminal()
    bar = Progress("done", total=4, stream=out)
    for done in (1, 2, 2, 4):
        bar.update(done)
    bar.close()
    frames = out.getvalue().split("\r")[1:]
    assert frames[:2] == ["done: [..............................] 0/4 (0%)",
                          "done: [#######.......................] 1/4 (25%)"]
    assert frames[-1] == "done: [##############################] 4/4 (100%)\n"
    assert len(frames) == 5, "an unchanged count is not redrawn"


def test_plain_lines_elsewhere_are_few():
    out = io.StringIO()
    bar = Progress("sent", total=100, stream=out, every=3600)
    for done in range(1, 101):
        bar.update(done)
    bar.close()
    assert out.getvalue().splitlines() == ["sent: [..............................] 1/100 (1%)",
                                           "sent: [##############################] 100/100 (100%)"]


def test_unknown_total_counts():
    out = io.StringIO()
    bar = Progress("listed", stream=out, every=0)
    bar.update(3)
    bar.close()
    assert out.getvalue() == "listed: 3\n"


def test_waiting_shows_the_parts_done(emulator, monkeypatch):
    # The chord's counter (the backend is made on the emulator, though its count is faked here).
    from carcelery import app, dispatch

    counts = iter([(1, 3), (3, 1), (4, 0)])
    polls = iter([False, False, False, True])

    class Result:
        parent = type("Group", (), {"id": "g"})()

        def ready(self):
            return next(polls)

        def failed(self):
            return False

        def get(self, follow_parents):
            return {"run": "r"}

    monkeypatch.setattr(app.backend, "chord_counts", lambda group_id: next(counts))
    monkeypatch.setattr(dispatch.time, "sleep", lambda seconds: None)
    out = Terminal()
    assert dispatch.wait({"id": "r", "images": 4, "result": Result()}, 60, out) == {"run": "r"}
    shown = [int(frame.split("] ")[1].split("/")[0]) for frame in out.getvalue().split("\r") if "] " in frame]
    assert shown == [0, 1, 3, 4, 4], shown
