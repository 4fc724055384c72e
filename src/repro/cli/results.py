"""`repro collect`, `analyze`, `figures`, `verify`, `report`: from the runs' records to the checked claims."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from repro import layout
from repro.cli.common import ParamsOpt, _params, _write_json, err, out
from repro.errors import ReproError
from repro.inputs import output_file_option

app = typer.Typer()


@app.command()
def collect(
    params: ParamsOpt = layout.PARAMS,
    summary: Annotated[Path, typer.Option(help="Long table to write.")] = layout.SUMMARY,
    metrics: Annotated[Path, typer.Option(help="Per-run metrics for `dvc metrics show`.")] = layout.METRICS,
) -> None:
    """Gather the study's run.json files into one long table (results/summary.csv), with each model's interval
    recomputed from its predictions.csv (exact binomial for accuracy, bootstrap over test examples otherwise)."""
    from repro.analysis import metric_interval
    from repro.models import MODELS
    from repro.results import PREDICTIONS_FILE, RUN_FILE, read_predictions, read_run, summary_rows, write_summary

    p = _params(params)
    a = p.analyze
    folders = [layout.run_dir(MODELS[m].path, d) for d in p.finetune.datasets for m in p.finetune.models]
    records = [read_run(folder / RUN_FILE) for folder in folders]
    from repro.progress import steps_bar

    intervals = []
    # Kappa, AUC and F1 intervals resample test examples (example_resamples metric calls per run): minutes for
    # the paper's study, so show where it is.
    with steps_bar(err, "intervals", len(records)) as steps:
        for folder, record in zip(folders, records):
            steps.start(f"{record['model']} on {record['dataset']}")
            if record["status"] != "ok":
                intervals.append(None)
            else:
                targets, scores = read_predictions(folder / PREDICTIONS_FILE)
                intervals.append(metric_interval(record["metric"], targets, scores, resamples=a.example_resamples,
                                                 seed=a.bootstrap_seed, level=a.ci_level))
            steps.done()
    write_summary(summary_rows(records, intervals), summary, metrics)
    out.print(f"[green]collected[/] {len(records)} runs -> {summary}")


@app.command()
def analyze(
    params: ParamsOpt = layout.PARAMS,
    summary: Annotated[Path, typer.Option(help="Long table from `repro collect`.")] = layout.SUMMARY,
    slopes: Annotated[Path, typer.Option(help="Fits to write.")] = layout.SLOPES,
    tables: Annotated[Path, typer.Option(help="Folder for sensitivity.csv and sensitivity.md.")] = layout.TABLES,
) -> None:
    """Fit metric vs ImageNet top-1 per dataset (all models, and models above the threshold) with bootstrap CIs,
    under analyze.report_rule, and the sensitivity table (every rule x threshold x transform, leave-one-model-out)."""
    from repro.results import read_summary

    p = _params(params)
    a = p.analyze
    from repro.models import MODELS
    from repro.results import RUN_FILE, read_run
    from repro.sensitivity import analyze as with_sensitivity
    from repro.splits import atomic_write

    table = read_summary(summary)
    records = [read_run(layout.run_dir(MODELS[m].path, d) / RUN_FILE)  # the per-epoch curves of every reporting rule
               for d in p.finetune.datasets for m in p.finetune.models]
    doc, files = with_sensitivity(table, records, a)
    doc = {"profile": p.profile, **doc}
    for name, content in files.items():
        atomic_write(tables / name, content)
    _write_json(slopes, doc)
    from rich.table import Table

    table = Table(title=f"slopes ({p.profile} profile, {a.transform} axes, rule {a.report_rule})",
                  caption=f"{doc['bootstrap']['method']}, {a.bootstrap_resamples} resamples, seed {a.bootstrap_seed}")
    for column in ("dataset", "metric", "fit", "models", "slope", f"{a.ci_level:.0%} CI"):
        table.add_column(column)
    for name, entry in doc["datasets"].items():
        for key, label in (("all", "all"), ("above_threshold", f">= {a.threshold:g}%")):
            fit = entry[key]
            ci = fit["ci"]
            table.add_row(name, entry["metric"], label, str(fit["n"]),
                          "-" if fit["slope"] is None else f"{fit['slope']:.3f}",
                          ci["reason"] or f"[{ci['low']:.3f}, {ci['high']:.3f}]")
    out.print(table)


@app.command()
def figures(
    params: ParamsOpt = layout.PARAMS,
    summary: Annotated[Path, typer.Option(help="Long table from `repro collect`.")] = layout.SUMMARY,
    slopes: Annotated[Path, typer.Option(help="Fits from `repro analyze`.")] = layout.SLOPES,
    figure: Annotated[Path, typer.Option("--out", help="Figure 1 replica (PNG; a PDF is written beside it).", callback=output_file_option)]
    = layout.FIGURE1,
    appendix: Annotated[Path, typer.Option(help="Appendix-B variant (PNG; a PDF beside it).")] = layout.FIGURE_B,
    tables: Annotated[Path, typer.Option(help="Folder for slopes.md and slopes.tex.")] = layout.TABLES,
    plot_data: Annotated[Path, typer.Option(help="Folder for the per-dataset CSVs of `dvc plots show`.")]
    = layout.PLOT_DATA,
) -> None:
    """Draw Figure 1 and its Appendix-B variant (PNG and PDF), and write the slope table (Markdown, LaTeX)."""
    import pandas as pd

    from repro.plots import figure1, figure_appendix_b
    from repro.report import latex_table, markdown_table, plot_rows, slope_caption, slope_rows
    from repro.results import read_json, read_summary
    from repro.splits import atomic_write

    p = _params(params)
    from repro.analysis import PROFILE_NOTES

    note = PROFILE_NOTES.get(p.profile, "" if p.profile == "paper" else f"{p.profile} profile: not the paper's result")
    table, fits = read_summary(summary), read_json(slopes, "repro analyze")
    written = [figure1(table, fits, [figure, figure.with_suffix(".pdf")], title_note=note,
                       label_points=p.figures.label_points),
               figure_appendix_b(table, fits, [appendix, appendix.with_suffix(".pdf")], title_note=note)]
    rows, caption = slope_rows(fits), slope_caption(fits)
    if note:
        caption = f"{caption} {note[0].upper()}{note[1:]}."
    atomic_write(tables / "slopes.md", markdown_table(rows, caption=caption).encode())
    atomic_write(tables / "slopes.tex", latex_table(rows, caption=caption).encode())
    for name, records in plot_rows(table, fits).items():
        atomic_write(plot_data / f"{name}.csv", pd.DataFrame(records).to_csv(index=False, lineterminator="\n")
                     .encode())
    out.print(f"[green]wrote[/] {', '.join(str(w) for w in written)} (+ PDF), {tables}/slopes.md|tex, "
              f"{plot_data}/")


@app.command()
def verify(
    params: ParamsOpt = layout.PARAMS,
    claims: Annotated[Path | None, typer.Option(help="Claims file [default: verify.claims in params].")] = None,
    summary: Annotated[Path, typer.Option(help="Long table from `repro collect`.")] = layout.SUMMARY,
    slopes: Annotated[Path, typer.Option(help="Fits from `repro analyze`.")] = layout.SLOPES,
    figure: Annotated[Path, typer.Option(help="Figure 1 replica.")] = layout.FIGURE1,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the verdicts as JSON.", callback=output_file_option)] = None,
    strict: Annotated[bool, typer.Option(help="Exit non-zero if any claim fails.")] = False,
    quiet: Annotated[bool, typer.Option(help="Print a one-line summary instead of the table.")] = False,
) -> None:
    """Check the paper's claims (paper/claims.yaml) against the current results and print a verdict table."""
    from repro.analysis import NEEDS, evaluate_claims
    from repro.inputs import load_yaml
    from repro.results import read_json, read_summary

    p = _params(params)
    claims_path = claims or Path(p.verify.claims)
    document = load_yaml(claims_path, "missing claims file")
    if not isinstance(document, dict) or "claims" not in document:
        raise ReproError(f"{claims_path}: expected a YAML mapping with a 'claims' list")
    claim_list = document["claims"]
    slopes_doc = read_json(slopes, "repro analyze")
    if slopes_doc.get("profile") != p.profile:
        raise ReproError(f"{slopes}: made under the {slopes_doc.get('profile')!r} profile, params say "
                         f"{p.profile!r}; run `dvc repro` first")
    from repro.models import pins

    verdicts = evaluate_claims(claim_list, p.profile, read_summary(summary), slopes_doc, figure.is_file(),
                               pins(p.finetune.models, layout.WEIGHTS_LOCK) if layout.WEIGHTS_LOCK.is_file() else None)
    from repro.sensitivity import verdict_rules

    rule = slopes_doc.get("report_rule", "best_val")  # slopes.json written before the rule existed: best_val
    verdicts = verdict_rules(verdicts, claim_list, rule)
    if json_out is not None:
        _write_json(json_out, {"profile": p.profile, "claims": verdicts})
    counts = {v: sum(1 for x in verdicts if x["verdict"] == v) for v in ("pass", "fail")}
    other = len(verdicts) - counts["pass"] - counts["fail"]
    line = (f"{len(verdicts)} claims: {counts['pass']} pass, {counts['fail']} fail, {other} not evaluated; "
            f"slopes under the {rule} rule (analyze.report_rule), values under best_val")
    if quiet:
        out.print(line + (f" -> {json_out}" if json_out else ""))
    else:
        from rich.table import Table

        table = Table(title=f"claims of the paper vs this run ({p.profile} profile)", show_lines=True)
        for column, ratio in (("id", 1), ("claim", 5), ("paper", 2), ("ours", 3), ("tol.", 1), ("rule", 1),
                              ("verdict", 3), ("command", 3)):
            table.add_column(column, overflow="fold", ratio=ratio)
        style = {"pass": "green", "fail": "red"}
        for v in verdicts:
            # The profile note below already says why paper claims are not evaluated here.
            shown_reason = v["reason"] and v["verdict"] not in NEEDS.values()
            verdict = v["verdict"] + (f": {v['reason']}" if shown_reason else "")
            table.add_row(v["id"], v["claim"], v["paper_value"], v["ours"] or "-", v["tolerance"] or "-", v["rule"],
                          f"[{style.get(v['verdict'], 'yellow')}]{verdict}[/]", v["command"])
        out.print(table)
        if p.profile != "paper":
            from repro.analysis import PROFILE_NOTES

            out.print(f"[yellow]The {p.profile!r} profile: {PROFILE_NOTES.get(p.profile, 'not the paper study')};[/] "
                      "the paper's claims need the paper profile (README, 'The paper profile').")
        out.print(line)
    if strict and counts["fail"]:
        raise typer.Exit(1)


@app.command()
def report(
    params: ParamsOpt = layout.PARAMS,
    summary: Annotated[Path, typer.Option(help="Long table from `repro collect`.")] = layout.SUMMARY,
    slopes: Annotated[Path, typer.Option(help="Fits from `repro analyze`.")] = layout.SLOPES,
    claims: Annotated[Path, typer.Option(help="Verdicts from `repro verify --json`.")] = layout.CLAIMS_OUT,
    figure: Annotated[Path, typer.Option(help="Figure 1 replica (PNG).")] = layout.FIGURE1,
    appendix: Annotated[Path, typer.Option(help="Appendix-B variant (PNG).")] = layout.FIGURE_B,
    report_file: Annotated[Path, typer.Option("--out", help="HTML file to write.", callback=output_file_option)] = layout.REPORT,
) -> None:
    """Write one self-contained HTML report (figures embedded, slope and claims tables, provenance) that opens
    offline."""
    import yaml

    from repro.models import MODELS
    from repro.report import compute_used, model_rows, render_report, split_hashes
    from repro.results import RUN_FILE, provenance, read_json, read_run, read_summary
    from repro.splits import atomic_write

    p = _params(params)
    verdicts = read_json(claims, "repro verify --json results/claims.json")
    if verdicts.get("profile") != p.profile:
        raise ReproError(f"{claims}: made under the {verdicts.get('profile')!r} profile, params say {p.profile!r}; "
                         "run `dvc repro` first")
    images = []
    for path, caption in ((figure, "Figure 1 replica: metric vs ImageNet top-1, all-model fit (grey) and the fit "
                                   f"over models at or above {p.analyze.threshold:g}% top-1 (red)"),
                          (appendix, "Appendix-B variant: per-model intervals, bootstrap bands of both fits, "
                                     "smoothing spline")):
        if not path.is_file():
            raise ReproError(f"{path}: missing; run `repro figures` first")
        images.append((f"{caption} ({path})", path.read_bytes()))
    records = [read_run(layout.run_dir(MODELS[m].path, d) / RUN_FILE)
               for d in p.finetune.datasets for m in p.finetune.models]
    info = provenance()
    info["splits"] = split_hashes(layout.PINS.read_text()) if layout.PINS.is_file() else {}
    raw = yaml.safe_load(layout.DATA_DVC.read_text()) if layout.DATA_DVC.is_file() else None
    info["raw_data"] = (raw or {}).get("outs") or []
    html = render_report(profile=p.profile, figures=images, slopes=read_json(slopes, "repro analyze"),
                         claims=verdicts["claims"], provenance=info, summary_rows=model_rows(read_summary(summary)),
                         compute=compute_used(records))
    atomic_write(report_file, html.encode())
    out.print(f"[green]wrote[/] {report_file} ({len(html) / 1e6:.1f} MB, self-contained)")
