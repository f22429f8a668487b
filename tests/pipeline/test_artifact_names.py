"""Artifacts that preview (issue #20): HTML/Markdown outputs carry their extension, with
kfp's real local runner, and the next task still reads them; every component names them."""

import ast
import json
from pathlib import Path

from kfp import dsl, local
from kfp.dsl import HTML, Input, Markdown, Output

from kubetrade.pipeline.component_runtime import named_file


@dsl.component(install_kfp_package=False)
def _write_reports(page: Output[HTML], notes: Output[Markdown]) -> None:
    from kubetrade.pipeline.component_runtime import named_file

    with open(named_file(page, ".html"), "w", encoding="utf-8") as fh:
        fh.write("<html><body>report</body></html>")
    with open(named_file(notes, ".md"), "w", encoding="utf-8") as fh:
        fh.write("# notes\n")


@dsl.component(install_kfp_package=False)
def _read_reports(page: Input[HTML], notes: Input[Markdown]) -> str:
    import json

    with open(page.path, encoding="utf-8") as a, open(notes.path, encoding="utf-8") as b:
        return json.dumps({"page": page.path, "notes": notes.path, "text": a.read() + b.read()})


@dsl.pipeline(name="named-artifacts")
def _named_artifacts() -> str:
    written = _write_reports()
    return _read_reports(page=written.outputs["page"], notes=written.outputs["notes"]).output


def test_reports_keep_their_extension_through_the_kfp_local_runner(tmp_path):
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path),
        raise_on_error=True,
    )
    read = json.loads(_named_artifacts().output)
    assert read["page"].endswith("/page.html") and read["notes"].endswith("/notes.md")
    assert read["text"] == "<html><body>report</body></html># notes\n"
    # what the runner (and the KFP backend's launcher) take as the artifacts' URIs
    (executor,) = tmp_path.rglob("write-reports/executor_output.json")
    uris = {k: v["artifacts"][0]["uri"] for k, v in json.loads(executor.read_text())[
        "artifacts"].items()}  # fmt: skip
    assert uris["page"].endswith("page.html") and uris["notes"].endswith("notes.md")
    assert Path(uris["page"].removeprefix("file://")).is_file()


def test_named_file_is_idempotent_and_wants_a_dot():
    page = HTML(uri="minio://mlpipeline/v2/artifacts/run/task/report")
    assert named_file(page, ".html").endswith("report.html")
    assert named_file(page, ".html").endswith("report.html")  # not report.html.html
    assert page.uri == "minio://mlpipeline/v2/artifacts/run/task/report.html"
    try:
        named_file(page, "html")
    except ValueError as exc:
        assert "leading dot" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("no error for an extension without a dot")


#: Which extension each preview type gets.
_EXTENSIONS = {"HTML": ".html", "Markdown": ".md"}


def test_every_html_and_markdown_output_of_the_components_is_named():
    """Each ``Output[HTML]`` / ``Output[Markdown]`` parameter goes through ``named_file``
    with its extension (read from the components' source, so a new one cannot miss it)."""
    seen = 0
    for path in sorted(Path("components").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            outputs = {
                arg.arg: _EXTENSIONS[ann.slice.id]
                for arg in func.args.args
                if isinstance(ann := arg.annotation, ast.Subscript)
                and isinstance(ann.value, ast.Name)
                and ann.value.id == "Output"
                and isinstance(ann.slice, ast.Name)
                and ann.slice.id in _EXTENSIONS
            }
            named = {
                call.args[0].id: call.args[1].value
                for call in ast.walk(func)
                if isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "named_file"
                and isinstance(call.args[0], ast.Name)
                and isinstance(call.args[1], ast.Constant)
            }
            assert named == outputs, f"{path}:{func.name}"
            seen += len(outputs)
    assert seen == 5  # data docs, evaluation, backtest, walk-forward reports; the summary
