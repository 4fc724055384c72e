"""What a reviewer reads: the slope table (Markdown, LaTeX), the per-dataset plot data for `dvc plots show`, and
one self-contained HTML report (figures embedded as data URIs, slope and claims tables, provenance) that opens
offline. Pure functions: they take the loaded results and return text or rows; cli.py writes the files.

Exercised by `repro figures` (tables, plot data) and `repro report` (results/report.html).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence

FIT_LABELS = {"all": "all models", "above_threshold": "top-1 >= {threshold:g}%"}


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def slope_rows(slopes: dict) -> list[dict]:
    """One row per (dataset, fit): the numbers of the slope table as text."""
    rows = []
    for name, entry in sorted(slopes["datasets"].items()):
        for key in ("all", "above_threshold"):
            fit = entry[key]
            ci = fit["ci"]
            interval = ci["reason"] if ci["low"] is None else f"[{ci['low']:.3f}, {ci['high']:.3f}]"
            rows.append({"dataset": name, "metric": entry["metric"],
                         "fit": FIT_LABELS[key].format(threshold=slopes["threshold_top1_percent"]),
                         "models": str(fit["n"]), "slope": _number(fit["slope"]), "interval": interval,
                         "intercept": _number(fit["intercept"]), "r": _number(fit["r"])})
    return rows


def slope_caption(slopes: dict) -> str:
    boot = slopes.get("bootstrap", {})
    level = boot.get("level")
    return (f"Least-squares slope of the downstream metric against ImageNet top-1 ({slopes['transform']} axes, both "
            f"as fractions). Interval: {level:.0%} {boot.get('method', '')}, {boot.get('resamples')} resamples, "
            f"seed {boot.get('seed')}." if level else f"Least-squares slopes ({slopes['transform']} axes).")


COLUMNS = (("dataset", "dataset"), ("metric", "metric"), ("fit", "fit"), ("models", "models"), ("slope", "slope"),
           ("interval", "interval"), ("intercept", "intercept"), ("r", "r"))


def markdown_table(rows: Sequence[Mapping[str, str]], columns=COLUMNS, caption: str = "") -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(title for _, title in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row[key]) for key, _ in columns) + " |" for row in rows]
    return (f"{caption}\n\n" if caption else "") + "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", ">=": r"$\geq$"}


def latex_escape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text.startswith(">=", i):
            out.append(_LATEX_SPECIAL[">="])
            i += 2
            continue
        out.append(_LATEX_SPECIAL.get(text[i], text[i]))
        i += 1
    return "".join(out)


def latex_table(rows: Sequence[Mapping[str, str]], columns=COLUMNS, caption: str = "",
                label: str = "tab:slopes") -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    spec = "lll" + "r" * (len(columns) - 3)
    body = [" & ".join(latex_escape(str(row[key])) for key, _ in columns) + r" \\" for row in rows]
    return "\n".join([
        r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
        " & ".join(latex_escape(title) for _, title in columns) + r" \\", r"\midrule", *body, r"\bottomrule",
        r"\end{tabular}", rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{label}}}", r"\end{table}", ""])


def plot_rows(summary, slopes: dict) -> dict[str, list[dict]]:
    """Per dataset, one row per model for `dvc plots show`: top-1, the metric, its interval and both fitted lines
    at that top-1 (empty where a fit does not apply), all in percent."""
    from repro.analysis import fitted_values, imagenet_rows

    table = imagenet_rows(summary[summary["status"] == "ok"])  # random-init runs have no place on this axis
    scale = slopes.get("transform", "linear")
    threshold = slopes["threshold_top1_percent"]
    out = {}
    for name, entry in sorted(slopes["datasets"].items()):
        rows = table[table["dataset"] == name].sort_values("imagenet_top1")
        records = []
        for row in rows.itertuples():
            x = float(row.imagenet_top1)
            record = {"model": row.model_display, "imagenet_top1": x, "metric": round(float(row.value) * 100, 4)}
            for key, column in (("all", "fit_all"), ("above_threshold", "fit_above_threshold")):
                fit = entry[key]
                applies = fit["slope"] is not None and (key == "all" or x >= threshold)
                record[column] = round(float(fitted_values(fit, x / 100, scale)) * 100, 4) if applies else None
            records.append(record)
        out[name] = records
    return out


# ---- the HTML report ------------------------------------------------------------------------------------------

def data_uri(content: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"


CLAIM_COLUMNS = (("id", "id"), ("claim", "claim"), ("paper_value", "paper / locked"), ("ours", "ours"),
                 ("tolerance", "tolerance"), ("rule", "rule"), ("verdict", "verdict"), ("command", "command"))


def model_rows(summary) -> list[dict]:
    """summary.csv rows with the value and its interval as text (percent-free fractions, as in the table)."""
    rows = []
    for row in summary.sort_values(["dataset", "imagenet_top1"]).to_dict("records"):
        low, high = row.get("value_low"), row.get("value_high")
        missing = low is None or high is None or math.isnan(low) or math.isnan(high)
        rows.append({**row, "value_text": _number(row["value"], 4),
                     "interval_text": "-" if missing else f"[{low:.4f}, {high:.4f}]",
                     "value_ci": None if not isinstance(row.get("value_ci"), str) else row["value_ci"]})
    return rows


def compute_used(records: Sequence[Mapping]) -> dict:
    """What the runs cost, from their run.json: devices, training and wall seconds, the commits they ran at."""
    devices = sorted({str(r.get("device")) for r in records if r.get("device")})
    shas = sorted({r.get("provenance", {}).get("git_sha") for r in records} - {None})
    return {"runs": len(records), "devices": devices, "git_shas": shas,
            "train_seconds": float(sum(r.get("train_seconds") or 0 for r in records)),
            "wall_seconds": float(sum(r.get("wall_seconds") or 0 for r in records))}


def split_hashes(sha256sums: str) -> dict[str, str]:
    """`sha256  name` lines (data/splits/SHA256SUMS) -> {name: sha256}."""
    pairs = (line.split(maxsplit=1) for line in sha256sums.splitlines() if line.strip())
    return {name.strip(): digest for digest, name in pairs}


def render_report(*, profile: str, figures: Sequence[tuple[str, bytes]], slopes: dict, claims: Sequence[dict],
                  provenance: Mapping, summary_rows: Sequence[Mapping], compute: Mapping) -> str:
    """The whole report as one HTML string. `figures` are (caption, PNG bytes); everything is inlined, so the file
    needs no network and no other file."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("repro", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    from repro.analysis import PROFILE_NOTES

    return env.get_template("report.html.j2").render(
        profile=profile, profile_note=PROFILE_NOTES.get(profile, ""), figures=[(caption, data_uri(png)) for caption, png in figures],
        slope_caption=slope_caption(slopes), slope_columns=COLUMNS, slope_rows=slope_rows(slopes),
        claim_columns=CLAIM_COLUMNS, claims=claims, provenance=provenance, models=summary_rows, compute=compute,
        sensitivity=sensitivity_tables(slopes))


def _yes(value) -> str:
    return "-" if value is None else ("yes" if value else "no")


SENSITIVITY_COLUMNS = (("rule", "rule"), ("threshold", "top-1 >="), ("transform", "axes"), ("left_out", "left out"),
                       ("n", "models"), ("slope", "slope"), ("interval", "interval"), ("below", "slope < 0.05"),
                       ("ci_below", "interval < 0.05"))


def sensitivity_text_rows(rows: Sequence[Mapping]) -> list[dict]:
    """One dataset's sensitivity rows (repro.sensitivity.COLUMNS) as text cells, the headline fit marked with *."""
    out = []
    for row in rows:
        interval = row["reason"] if row["ci_low"] is None else f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        out.append({"rule": row["rule"] + (" *" if row["headline"] else ""), "threshold": f"{row['threshold']:g}%",
                    "transform": row["transform"], "left_out": row["left_out"] or "-", "n": str(row["n"]),
                    "slope": _number(row["slope"]), "interval": interval or "-", "below": _yes(row["below_bound"]),
                    "ci_below": _yes(row["ci_below_bound"]), "headline": row["headline"]})
    return out


def sensitivity_caption(doc: Mapping, dataset: str) -> str:
    boot = doc["bootstrap"]
    return (f"{dataset}: slope of the metric against ImageNet top-1 under each reporting rule, ImageNet threshold "
            f"and axis transform, then with each model of the headline fit (*: rule {doc['rule']}, top-1 >= "
            f"{doc['threshold']:g}%, {doc['transform']} axes) left out. Interval: {boot['level']:.0%} percentile "
            f"bootstrap over models, {boot['resamples']} resamples, seed {boot['seed']}. The 0.05 bound is the "
            "paper's on linear axes only.")


def sensitivity_markdown(doc: Mapping) -> str:
    """paper/tables/sensitivity.md from slopes.json's `sensitivity` (repro.sensitivity): the rules, then one table
    per dataset."""
    parts = ["# Sensitivity of the slopes (repro analyze)\n",
             *(f"- `{rule}`: {text}" for rule, text in doc["rules"].items()), ""]
    for dataset, rows in doc["datasets"].items():
        table = markdown_table(sensitivity_text_rows(rows), SENSITIVITY_COLUMNS, sensitivity_caption(doc, dataset))
        parts += [f"## {dataset}\n", table]
    return "\n".join(parts)


def sensitivity_tables(slopes: Mapping) -> list[dict]:
    """One table per dataset from slopes.json's `sensitivity`; none from a slopes.json written without it."""
    doc = slopes.get("sensitivity")
    if not doc:
        return []
    return [{"dataset": name, "caption": sensitivity_caption(doc, name), "columns": SENSITIVITY_COLUMNS,
             "rows": sensitivity_text_rows(rows)} for name, rows in doc["datasets"].items()]
