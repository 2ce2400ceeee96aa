"""Program plots without Graphviz: a text listing and a self-contained SVG of the graph.

``render_text`` and ``render_svg`` draw ``training.program.describe_program``'s data
(modules with type, input/output schemas and trainable flag, and their edges);
``render_png`` adds Synalinks' own Graphviz plot when pydot and ``dot`` are installed.
"""

from __future__ import annotations

import html
import json


def _dumps(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _fields(schema) -> str:
    """``name: type, ...`` of a JSON schema (or a list of them), for the SVG boxes."""
    if schema is None:
        return "?"
    if isinstance(schema, list):
        return " | ".join(_fields(item) for item in schema)
    if not isinstance(schema, dict):
        return "?"
    properties = schema.get("properties") or {}
    parts = []
    for name, spec in properties.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind is None and isinstance(spec, dict):
            if "$ref" in spec:
                kind = spec["$ref"].rsplit("/", 1)[-1]
            elif "anyOf" in spec:
                options = [s for s in spec["anyOf"] if isinstance(s, dict)]
                kind = "|".join(str(s.get("type", "?")) for s in options)
        parts.append(f"{name}: {kind or 'any'}")
    title = schema.get("title", "")
    return f"{title}({', '.join(parts)})" if title else ", ".join(parts)


def render_text(description: dict) -> str:
    """A plain-text program plot: every module with its type, schemas and trainable flag."""
    lines = [f"Program: {description['name']} ({description['class']})"]
    if description["description"]:
        lines.append(f"Description: {description['description']}")
    modules = description["modules"]
    lines.append(f"Modules: {len(modules)}")
    inbound = {i: [] for i in range(len(modules))}
    for source, target in description["edges"]:
        inbound[target].append(modules[source]["name"])
    for i, module in enumerate(modules):
        flag = ""
        if module["trainable"] is not None:
            flag = "  [trainable]" if module["trainable"] else "  [non-trainable]"
        lines.append("")
        lines.append(f"[{i + 1}] {module['name']} ({module['class']}){flag}")
        if inbound[i]:
            lines.append(f"    inputs from: {', '.join(inbound[i])}")
        if module["input_schema"] is not None:
            lines.append("    input schema:")
            lines.extend("      " + line for line in _dumps(module["input_schema"]).splitlines())
        if module["output_schema"] is not None:
            lines.append("    output schema:")
            lines.extend("      " + line for line in _dumps(module["output_schema"]).splitlines())
    return "\n".join(lines) + "\n"


_BOX_W, _LINE_H, _GAP_X, _GAP_Y, _PAD = 360, 18, 40, 56, 20


def _wrap_text(text: str, width: int = 52) -> list[str]:
    lines, current = [], ""
    for word in text.split(" "):
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return [line if len(line) <= width else line[: width - 1] + "…" for line in lines]


def render_svg(description: dict) -> str:
    """A self-contained SVG program plot (a layered graph) needing no Graphviz."""
    modules = description["modules"]
    count = len(modules)
    depth = [0] * count
    for _ in range(count):  # longest path from the inputs (graphs are small and acyclic)
        changed = False
        for source, target in description["edges"]:
            if depth[target] < depth[source] + 1:
                depth[target] = depth[source] + 1
                changed = True
        if not changed:
            break
    if description["kind"] == "other":
        depth = list(range(count))  # unconnected: one per row
    bodies = []
    for module in modules:
        body = [("title", f"{module['name']} ({module['class']})")]
        for label, key in (("in", "input_schema"), ("out", "output_schema")):
            if module[key] is not None:
                body += [("text", line) for line in _wrap_text(f"{label}: {_fields(module[key])}")]
        if module["trainable"] is not None:
            body.append(("badge", "Trainable" if module["trainable"] else "Non-trainable"))
        bodies.append(body)
    rows: dict[int, list[int]] = {}
    for i in range(count):
        rows.setdefault(depth[i], []).append(i)
    heights = [(len(body) + 1) * _LINE_H + 8 for body in bodies]
    widest = max((len(r) for r in rows.values()), default=1)
    width = _PAD * 2 + widest * _BOX_W + (widest - 1) * _GAP_X
    positions = {}
    y = _PAD + 30
    for level in sorted(rows):
        members = rows[level]
        row_width = len(members) * _BOX_W + (len(members) - 1) * _GAP_X
        x = (width - row_width) / 2
        for i in members:
            positions[i] = (x, y)
            x += _BOX_W + _GAP_X
        y += max(heights[i] for i in members) + _GAP_Y
    height = y - _GAP_Y + _PAD
    esc = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif" '
        'font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#333"/></marker></defs>',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{_PAD}" y="{_PAD + 8}" font-size="15" font-weight="bold">'
        f"{esc(description['name'])} ({esc(description['class'])})</text>",
    ]
    for source, target in description["edges"]:
        (x1, y1), (x2, y2) = positions[source], positions[target]
        out.append(
            f'<line x1="{x1 + _BOX_W / 2:.0f}" y1="{y1 + heights[source]:.0f}" '
            f'x2="{x2 + _BOX_W / 2:.0f}" y2="{y2:.0f}" stroke="#333" stroke-width="2" '
            'marker-end="url(#arrow)"/>'
        )
    for i, body in enumerate(bodies):
        x, y = positions[i]
        out.append(f'<g class="module" data-name="{esc(modules[i]["name"])}">')
        out.append(
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{_BOX_W}" height="{heights[i]}" rx="6" '
            'fill="#f7f7f7" stroke="#222" stroke-width="1.5"/>'
        )
        out.append(
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{_BOX_W}" height="{_LINE_H + 8}" rx="6" '
            'fill="#222"/>'
        )
        line_y = y + _LINE_H
        for kind, text in body:
            if kind == "title":
                out.append(
                    f'<text x="{x + 10:.0f}" y="{line_y:.0f}" fill="white" font-weight="bold">'
                    f"{esc(text)}</text>"
                )
                line_y += _LINE_H + 8
            elif kind == "badge":
                color = "#228b22" if text == "Trainable" else "#b22222"
                out.append(
                    f'<rect x="{x + 10:.0f}" y="{line_y - 13:.0f}" width="110" height="17" '
                    f'rx="3" fill="{color}"/>'
                )
                out.append(
                    f'<text x="{x + 16:.0f}" y="{line_y:.0f}" fill="white" '
                    f'font-weight="bold">{esc(text)}</text>'
                )
                line_y += _LINE_H
            else:
                out.append(f'<text x="{x + 10:.0f}" y="{line_y:.0f}">{esc(text)}</text>')
                line_y += _LINE_H
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_png(program, folder: str, file_name: str) -> None:
    """Synalinks' own Graphviz plot, when pydot and the ``dot`` binary are installed."""
    from synalinks_obs.compat import synalinks as synalinks_compat

    visualization = synalinks_compat.program_visualization()
    if visualization is None or not (visualization.check_pydot() and visualization.check_graphviz()):
        return
    visualization.plot_program(
        program,
        to_file=file_name,
        to_folder=folder,
        show_schemas=True,
        show_module_names=True,
        show_trainable=True,
        dpi=96,
    )
