"""The CLI's refusals: each is one `error:` line and exit status 2, raised before any model is loaded or anything is
encoded, sent or written (no model, no platform: the encoder and the server are replaced by ones that fail)."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from core.settings import get_settings

runner = CliRunner()


def _no_encoder(*_: object, **__: object) -> None:
    raise AssertionError("an encoder was made: the check should have come first")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings in tmp_path, a base model that does not exist, and no way to make an encoder."""
    for k, v in {
        "RR_BASE_MODEL": str(tmp_path / "no-model"),
        "RR_EXPERTS_DIR": str(tmp_path / "experts"),
        "RR_CACHE_DIR": str(tmp_path / "cache"),
        "RR_DATA_DIR": str(tmp_path / "data"),
        "RR_BF16": "false",
    }.items():
        monkeypatch.setenv(k, v)
    import benchmarks.quality
    import router.evaluate
    import router.workbench

    for module in (router.workbench, router.evaluate, benchmarks.quality):
        monkeypatch.setattr(module, "make_encoder", _no_encoder)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _refused(res: Result, *needles: str) -> None:
    """Exit 2 with an error line (no traceback) holding every needle; compared without whitespace, since the console
    wraps long lines (and long paths) at its width."""
    flat = "".join(res.output.split())
    assert res.exit_code == 2, (res.output, res.exception)
    assert isinstance(res.exception, SystemExit), res.exception
    assert "error:" in flat, res.output
    for n in needles:
        assert "".join(n.split()) in flat, (n, res.output)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _without_train(beir_root: Path, tmp_path: Path) -> Path:
    d = tmp_path / "beir" / "bio"
    shutil.copytree(beir_root / "bio", d)
    (d / "qrels" / "train.tsv").unlink()
    return d


def test_ingest_reports_unreadable_documents(env: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"  # never reached: the documents are read first
    args = ["--collection", "c", "--url", url, "--key", "k"]
    empty = env / "empty"
    empty.mkdir()
    _refused(runner.invoke(app, ["ingest", str(empty), *args]), "no corpus.jsonl")
    dup = env / "dup"
    dup.mkdir()
    (dup / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n')
    _refused(runner.invoke(app, ["ingest", str(dup), *args]), "corpus.jsonl:2", "duplicate document id")
    number = env / "docs.jsonl"
    number.write_text('{"id": "d1", "text": "a"}\n5\n')
    _refused(runner.invoke(app, ["ingest", str(number), *args]), "docs.jsonl:2", "must hold a JSON object")
    number.write_bytes(b'{"id": "d1", "text": "caf\xe9"}\n')
    _refused(runner.invoke(app, ["ingest", str(number), *args]), "docs.jsonl:1", "not valid UTF-8")


def test_ingest_refuses_a_batch_of_zero(env: Path, beir_root: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    args = ["--collection", "c", "--url", url, "--key", "k", "--batch", "0"]
    res = runner.invoke(app, ["ingest", str(beir_root / "bio"), *args])
    assert res.exit_code == 2 and "--batch" in res.output, res.output  # typer's usage error, before anything runs


def test_no_platform_running_is_one_line_naming_the_url(env: Path, beir_root: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    auth = ["--url", url, "--key", "k"]
    res = runner.invoke(app, ["ingest", str(beir_root / "bio"), "--collection", "c", *auth])
    _refused(res, f"could not reach {url}/collections/c", "is the platform running")
    res = runner.invoke(app, ["search", "protein", "--collection", "c", *auth])
    _refused(res, f"could not reach {url}/collections/c/search")
    res = runner.invoke(app, ["bench", "platform", "--data", str(beir_root / "bio"), "--collection", "c", *auth])
    _refused(res, f"could not reach {url}/collections/c")


def test_experts_list_reports_a_bad_mode_and_a_corrupt_manifest(env: Path) -> None:
    _refused(runner.invoke(app, ["experts", "list", "--sides", "both"]), "mode must be one of")
    bad = env / "experts" / "query" / "x"
    bad.mkdir(parents=True)
    # a folder whose manifest does not load is named, with why, and does not stop the listing (nor serving)
    for text, why in (("{not json", "manifest.json: not valid JSON"), ("[1]", "manifest.json: a manifest is a JSON")):
        (bad / "manifest.json").write_text(text)
        res = runner.invoke(app, ["experts", "list"])
        assert res.exit_code == 0, res.output
        assert res.stdout == "" and "skipped" in res.stderr and why in "".join(res.stderr.split("\n"))
        assert "rr experts remove x" in res.stderr
    res = runner.invoke(app, ["experts", "remove", "x"])  # and it can be removed
    assert res.exit_code == 0, res.output
    assert not bad.exists()


def test_experts_train_checks_its_options_and_the_train_split_before_encoding(
    env: Path, beir_root: Path, tmp_path: Path
) -> None:
    train = ["experts", "train", "--name", "bio"]
    _refused(runner.invoke(app, [*train, "--data", str(beir_root / "bio"), "--lr", "5"]), "lr must be in (0, 1)")
    res = runner.invoke(app, [*train, "--data", str(beir_root / "bio"), "--hard-negatives", "-1"])
    _refused(res, "hard_negatives must be >= 0")
    res = runner.invoke(app, [*train, "--data", str(beir_root / "bio"), "--hard-negatives", "3"])  # was ignored
    _refused(res, "hard_negatives are mined for the in-batch document side", "needs sides 'query+document'")
    _refused(
        runner.invoke(app, [*train, "--data", str(beir_root / "bio"), "--budget", "-1"]), "time_budget_s must be > 0"
    )
    res = runner.invoke(app, [*train, "--data", str(beir_root / "bio"), "--doc-anchor", "1"])
    _refused(res, "doc_anchor holds the document side", "needs sides 'query+document'")
    no_train = _without_train(beir_root, tmp_path)
    _refused(runner.invoke(app, [*train, "--data", str(no_train)]), "split 'train'", "splits here: test")


def test_eval_checks_the_system_and_the_split_before_encoding(env: Path, beir_root: Path, tmp_path: Path) -> None:
    data = ["eval", "--data", str(beir_root / "bio")]
    res = runner.invoke(app, [*data, "--system", "foo"])
    _refused(res, "unknown system 'foo'", "router_retriever_corpus", "expert:NAME")
    _refused(runner.invoke(app, [*data, "--system", "expert:nope"]), "unknown expert 'nope'")
    no_train = _without_train(beir_root, tmp_path)
    res = runner.invoke(app, ["eval", "--data", str(no_train), "--system", "base", "--split", "train"])
    _refused(res, "split 'train'", "splits here: test")


def test_serve_with_a_wrong_data_folder_fails_before_serving(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import core.runtime

    def no_serving(*_: object, **__: object) -> None:
        raise AssertionError("serve went on past a wrong --data")

    monkeypatch.setattr(uvicorn, "run", no_serving)  # nothing can start a server (or hang the test)
    monkeypatch.setattr(core.runtime, "get_runtime", no_serving)
    _refused(runner.invoke(app, ["serve", "--data", str(env / "typo")]), "no such folder of BEIR collections")


def test_bench_quality_refuses_unknown_only_names_before_writing(env: Path, beir_root: Path) -> None:
    out = env / "results"
    res = runner.invoke(app, ["bench", "quality", "--data", str(beir_root), "--only", "bio,nope", "--out", str(out)])
    _refused(res, "no collection named nope", "there: aero, bio")
    assert not out.exists() and not (env / "experts").exists()
    bench = ["bench", "quality", "--data", str(beir_root), "--out", str(out)]
    _refused(runner.invoke(app, [*bench, "--modes", ","]), "--modes names no mode")  # was a StopIteration traceback
    # an unknown mode is refused before the first mode's hour of work, not after it
    _refused(runner.invoke(app, [*bench, "--modes", "query,bogus"]), "mode must be one of", "'bogus'")
    assert not out.exists() and not (env / "experts").exists()


def test_bench_quality_refuses_a_collection_without_a_train_split_before_training(
    env: Path, beir_root: Path, tmp_path: Path
) -> None:
    data = _without_train(beir_root, tmp_path).parent  # bio without its train split, beside aero with one
    shutil.copytree(beir_root / "aero", data / "aero")
    out = env / "results"
    res = runner.invoke(app, ["bench", "quality", "--data", str(data), "--out", str(out)])  # was KeyError 'train'
    _refused(res, "has no train split", "rr eval")
    assert not out.exists() and not (env / "experts").exists()


def test_a_bench_of_a_subset_keeps_the_served_pilot_library(tmp_path: Path) -> None:
    from benchmarks.quality import pilot_files_dir

    reg = tmp_path / "experts" / "query-document"
    assert pilot_files_dir(reg, tmp_path / "results", None) == reg  # every dataset: the served library
    assert pilot_files_dir(reg, tmp_path / "results", ["bio"]) == tmp_path / "results" / "query-document"


def test_hints_name_commands_that_exist() -> None:
    """The hints on rebuilding pilots point to a real command (there is no `rr pilots`)."""
    import inspect

    import cli.main
    import router.pilots

    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert "pilots" not in names and "bench" in names
    for module in (cli.main, router.pilots):
        assert "rr pilots" not in inspect.getsource(module)


def test_worker_refuses_the_in_memory_broker(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker on memory:// would take jobs from a queue no API process can put them in: they would wait forever."""
    monkeypatch.delenv("RR_BROKER_URL", raising=False)
    get_settings.cache_clear()
    assert get_settings().broker_url == "memory://"  # the default
    _refused(runner.invoke(app, ["worker"]), "RR_BROKER_URL=redis://", "in-process", "rr serve")


def test_worker_reports_a_busy_metrics_port(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics server starts before the worker: a port in use is one error line naming it, and no worker runs."""
    monkeypatch.setenv("RR_BROKER_URL", f"redis://127.0.0.1:{_closed_port()}/0")  # never reached
    get_settings.cache_clear()
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = runner.invoke(app, ["worker", "--metrics-port", str(port)])
    _refused(res, f"0.0.0.0:{port}", "--metrics-port", "RR_WORKER_METRICS_PORT")


@pytest.mark.parametrize(
    ("var", "value", "needles"),
    [
        ("RR_SHARD_NUMBER", "2", ["RR_SHARD_NUMBER applies to a Qdrant server", "not to 'embedded'"]),
        ("RR_SHARD_NUMBER", "0", ["bad settings", "RR_SHARD_NUMBER='0'", "greater than or equal to 1"]),
        ("RR_STORE_URL", "qdrant://x", ["bad settings", "RR_STORE_URL='qdrant://x'", "http(s)://"]),
        # the server started, and every ingestion was a 500 (kombu's KeyError) with its job queued for ever
        ("RR_BROKER_URL", "foo://x", ["bad settings", "RR_BROKER_URL='foo://x'", "Celery broker URL"]),
        # one line per variable, named as it is set: not RR_BF16_BOOL and RR_BF16_LITERAL['AUTO']
        ("RR_BF16", "maybe", ["RR_BF16='maybe': Input should be a valid boolean", "or Input should be 'auto'"]),
    ],
)
def test_serve_refuses_bad_store_settings_in_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str, needles: list[str]
) -> None:
    """Settings the store refuses, or that do not parse, are one error line from any command, not a traceback."""
    import uvicorn

    import core.runtime

    def no_serving(*_: object, **__: object) -> None:
        raise AssertionError("serve went on past bad settings")

    monkeypatch.setattr(uvicorn, "run", no_serving)
    monkeypatch.setenv(var, value)
    monkeypatch.setattr(core.runtime, "_runtime", None)
    get_settings.cache_clear()
    _refused(runner.invoke(app, ["serve"]), *needles)
    assert not (env / "data" / "qdrant-edge").exists()  # refused before a store was opened


@pytest.mark.parametrize(
    "args",
    [
        ["search", "bad \udcff", "--collection", "x", "--url", "http://127.0.0.1:9", "--key", "k"],
        ["route", "bad \udcff"],
        ["eval", "--data", "/tmp/\udcff", "--system", "base"],
    ],
)
def test_an_argument_that_is_not_utf8_is_one_line(env: Path, args: list[str]) -> None:
    """A terminal's bytes that are not UTF-8 reach Python as lone surrogates; they are refused before anything runs."""
    _refused(runner.invoke(app, args), "is not UTF-8 text", "\\xff")


def test_an_error_is_one_line_on_stderr_and_its_text_is_not_markup(env: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["experts", "list", "--sides", "[/x]"])  # was a rich MarkupError traceback
    _refused(res, "got '[/x]'")
    assert res.stdout == "" and res.stderr.count("\n") == 1  # stderr only, unwrapped
    odd = tmp_path / "[bold]data"
    odd.mkdir()
    _refused(runner.invoke(app, ["experts", "train", "--data", str(odd), "--name", "x"]), "[bold]data")


def test_removing_the_last_expert_with_pilots_is_refused_before_anything_changes(tmp_path: Path) -> None:
    import os

    from router.pilots import PilotLibrary

    root = tmp_path / "experts"
    shutil.copytree(Path(__file__).resolve().parents[1] / "experts" / "query", root / "query")
    before = {p.name: p.read_bytes() for p in (root / "query").iterdir() if p.is_file()}
    env = {**os.environ, "RR_EXPERTS_DIR": str(root)}
    names = sorted(p.name for p in (root / "query").iterdir() if p.is_dir())
    for name in names[:-1]:
        res = runner.invoke(app, ["experts", "remove", name], env=env)
        assert res.exit_code == 0, res.output
    before = {p.name: p.read_bytes() for p in (root / "query").iterdir() if p.is_file()}
    res = runner.invoke(app, ["experts", "remove", names[-1]], env=env)
    _refused(res, f"{names[-1]!r} is the last expert with pilot scores")
    assert (root / "query" / names[-1] / "manifest.json").is_file()  # nothing was deleted or rewritten
    assert {p.name: p.read_bytes() for p in (root / "query").iterdir() if p.is_file()} == before
    assert PilotLibrary.load(root / "query" / "pilots.json").experts == [names[-1]]


@pytest.mark.parametrize("query", ["", "   "])
def test_route_refuses_an_empty_query(env: Path, query: str) -> None:
    _refused(runner.invoke(app, ["route", query]), "query must not be empty")  # it was routed, as if a query


def test_experts_train_refuses_judged_queries_missing_from_the_queries_file(
    env: Path, beir_root: Path, tmp_path: Path
) -> None:
    d = tmp_path / "beir" / "bio"
    shutil.copytree(beir_root / "bio", d)
    with (d / "qrels" / "train.tsv").open("a") as f:
        f.write("no-such-query\tb1\t1\n")  # it was dropped without a word
    _refused(
        runner.invoke(app, ["experts", "train", "--name", "bio", "--data", str(d)]),
        "train.tsv",
        "query-id",
        "1 judged queries are absent from queries.jsonl",
    )


def test_removing_an_expert_without_pilot_scores_leaves_the_pilots_as_they_are(tmp_path: Path) -> None:
    import json
    import os

    root = tmp_path / "experts"
    shutil.copytree(Path(__file__).resolve().parents[1] / "experts" / "query", root / "query")
    reg = root / "query"
    shutil.copytree(reg / "scifact", reg / "unscored")  # registered by hand: not scored (no Algorithm 1 yet)
    manifest = json.loads((reg / "unscored" / "manifest.json").read_text())
    (reg / "unscored" / "manifest.json").write_text(json.dumps({**manifest, "name": "unscored"}))
    before = {p.name: p.read_bytes() for p in reg.iterdir() if p.is_file()}
    get_settings.cache_clear()  # the settings of an earlier test
    try:
        res = runner.invoke(app, ["experts", "remove", "unscored"], env={**os.environ, "RR_EXPERTS_DIR": str(root)})
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0 and "unchanged" in res.output, res.output
    assert not (reg / "unscored").exists()
    assert {p.name: p.read_bytes() for p in reg.iterdir() if p.is_file()} == before  # pilots.json not rewritten


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["search", "x"], ["Missing option '--collection'", "see `rr search --help`"]),
        (["experts", "train", "--nope"], ["No such option: --nope", "see `rr experts train --help`"]),
        (["nope"], ["No such command 'nope'", "see `rr --help`"]),
    ],
)
def test_a_usage_error_is_one_line_like_every_refusal(env: Path, args: list[str], needles: list[str]) -> None:
    res = runner.invoke(app, args, prog_name="rr")
    assert res.exit_code == 2 and res.stdout == "", res.output
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error:"), res.stderr  # not a boxed usage text
    for n in needles:
        assert n in res.stderr, res.stderr


def test_a_group_alone_still_shows_its_help(env: Path) -> None:
    res = runner.invoke(app, ["experts"])
    assert "train" in res.output and "remove" in res.output and "error:" not in res.output


def test_experts_train_refuses_too_few_queries_before_encoding_the_corpus(
    env: Path, beir_root: Path, tmp_path: Path
) -> None:
    d = tmp_path / "beir" / "bio"
    shutil.copytree(beir_root / "bio", d)
    lines = (d / "qrels" / "train.tsv").read_text().splitlines()
    qids = list(dict.fromkeys(line.split("\t")[0] for line in lines[1:]))[:2]
    kept = [line for line in lines[1:] if line.split("\t")[0] in qids]
    (d / "qrels" / "train.tsv").write_text("\n".join([lines[0], *kept]) + "\n")
    # no encoder can be made here (env): the refusal must come before the corpus is encoded and cached
    _refused(
        runner.invoke(app, ["experts", "train", "--name", "bio", "--data", str(d)]),
        "too few training queries to hold any out",
    )
    assert not (env / "cache").exists()


def test_experts_train_refuses_a_broken_folder_of_its_name_and_a_train_split_judging_nothing(
    env: Path, beir_root: Path
) -> None:
    """Both were found only after the whole training: a folder of the name whose manifest does not load ended in
    "it was registered while this one trained" (it was not); a header-only train split gave an expert of no real
    query (self-supervised pairs alone)."""
    train = ["experts", "train", "--name", "bio"]
    broken = env / "experts" / "query" / "bio"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{bad")
    res = runner.invoke(app, [*train, "--data", str(beir_root / "bio")])
    _refused(res, "holds no expert that loads", "rr experts remove bio")
    assert (broken / "manifest.json").read_text() == "{bad"  # left as it was
    shutil.rmtree(broken)
    judged_nothing = env / "beir" / "bio"
    shutil.copytree(beir_root / "bio", judged_nothing)
    (judged_nothing / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n")
    _refused(runner.invoke(app, [*train, "--data", str(judged_nothing)]), "qrels/train.tsv judges no query")
    assert not (env / "experts" / "query").exists() or not any((env / "experts" / "query").iterdir())


@pytest.mark.parametrize("content", [b"garbage\n", b"PK\x03\x04 truncated"])
def test_a_damaged_pilot_scores_file_is_one_line_and_nothing_is_removed(tmp_path: Path, content: bytes) -> None:
    import os

    root = tmp_path / "experts"
    shutil.copytree(Path(__file__).resolve().parents[1] / "experts" / "query", root / "query")
    (root / "query" / "pilot_scores.npz").write_bytes(content)
    res = runner.invoke(app, ["experts", "remove", "cacm"], env={**os.environ, "RR_EXPERTS_DIR": str(root)})
    _refused(res, "pilot_scores.npz", "not a pilot scores file", "rr bench quality")
    assert (root / "query" / "cacm" / "manifest.json").is_file()


@pytest.mark.parametrize("rule", ["", "nearst"])
def test_route_refuses_an_unknown_rule_before_loading_a_model(env: Path, rule: str) -> None:
    """An empty --rule was taken for none (the served rule); an unknown one was refused only after encoding."""
    _refused(runner.invoke(app, ["route", "a query", "--rule", rule]), f"unknown routing rule {rule!r}")
