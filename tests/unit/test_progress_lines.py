"""Progress lines of long steps (issue #17): tuning trials and the Feast join."""

from __future__ import annotations

import optuna
import pytest

from kubetrade.tuning.optuna_backend import TrialProgress


def test_trial_progress_prints_count_best_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    progress = TrialProgress(total=4, done=1)  # one trial resumed from an earlier run
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3, callbacks=[progress])
    # from the marker on: in a full test run another test's leftover thread may write to the
    # same captured stdout without a newline (seen once on a fresh clone)
    out = capsys.readouterr().out
    lines = ["[kubetrade] tune: trial " + part.split("\n", 1)[0]
             for part in out.split("[kubetrade] tune: trial ")[1:]]  # fmt: skip
    assert [line.split()[3] for line in lines] == ["2/4", "3/4", "4/4"], out
    assert all(line.split()[4] == "COMPLETE" for line in lines), out
    assert "ETA" in lines[0] and "ETA" not in lines[-1]
    assert f"best {study.best_value:.4g}" in lines[-1]


def test_run_console_keeps_task_and_kubetrade_lines_and_strips_colour(tmp_path) -> None:
    """``kubetrade run``'s console tee (kubetrade.pipeline.progress): kfp's coloured task lines
    become one short line each, library chatter goes to the log only; verbose shows all."""
    import io

    from kubetrade.pipeline.progress import ProgressTee

    lines = [
        "\x1b[32mINFO - Executing task 'ingest-op'\x1b[0m",
        "INFO - Task 'ingest-op' finished with status \x1b[32mSUCCESS\x1b[0m",
        "    [kubetrade] validate: quality 1.00",
        "some library chatter",
    ]
    console = io.StringIO()
    tee = ProgressTee(tmp_path / "pipeline.log", console, verbose=False)
    tee.write("\n".join(lines) + "\npartial line without newline")
    tee.close()
    assert console.getvalue().splitlines() == [
        "▶ ingest-op",
        "  Task 'ingest-op' finished with status SUCCESS",
        "  validate: quality 1.00",
    ]
    log = (tmp_path / "pipeline.log").read_text(encoding="utf-8")
    assert "some library chatter" in log and log.endswith("partial line without newline")

    loud = io.StringIO()
    tee = ProgressTee(tmp_path / "verbose.log", loud, verbose=True)
    tee.write("\n".join(lines) + "\n")
    tee.close()
    assert loud.getvalue().splitlines()[-1] == "some library chatter"
    assert "\x1b[" not in loud.getvalue()
