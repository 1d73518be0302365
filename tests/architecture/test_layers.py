"""Dependencies run one way (docs/architecture.md): a package imports only packages of lower layers, or the few
same-layer packages it plugs into, at module level or inside a function alike."""

import ast
import subprocess
import sys
from pathlib import Path

import transferkit

ROOT = Path(transferkit.__file__).parent
#: rank of each top-level package/module; an import must go to a lower rank (or be listed in SAME_LAYER)
LAYERS = {
    "errors": 0, "io": 0.1, "params": 0.1, "runtime": 0.2,
    "backbones": 1, "data": 1, "datasets": 1,
    "features": 2, "model": 2,
    "heads": 3, "baselines": 3, "select": 3, "shift": 3, "finetune": 3, "adapt": 3,
    "predict": 4, "export": 4, "serve": 4,
    "report": 5, "fit": 5, "sklearn": 5, "demo": 5,
    "cli": 6, "__init__": 6, "__main__": 7,
}
#: same-layer imports that are part of the design: adapt plugs into finetune, finetune and adapt score with heads'
#: metrics, baselines fit the logreg head on pixels, `datasets` is data's public alias, demo runs a comparison,
#: fit builds on compare, adapt corrects the label shift that shift's BBSE estimates
SAME_LAYER = {("finetune", "heads"), ("adapt", "finetune"), ("adapt", "heads"), ("adapt", "shift"),
              ("baselines", "heads"), ("datasets", "data"), ("demo", "report"), ("fit", "report")}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {m for m in found if m.startswith("transferkit.")}


def test_every_import_goes_down_the_layers():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        part = path.relative_to(ROOT).with_suffix("").parts[0]
        assert part in LAYERS, f"{path}: add the package {part!r} to LAYERS (and docs/architecture.md)"
        for module in _imports(path):
            target = module.split(".")[1]
            if target == part:
                continue
            if LAYERS[target] < LAYERS[part] or (part, target) in SAME_LAYER:
                continue
            bad.append(f"{path.relative_to(ROOT)} imports {module} (layer {LAYERS[part]} -> {LAYERS[target]})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The check above can fail: a lower layer importing a higher one is reported."""
    fake = tmp_path / "transferkit"
    (fake / "backbones").mkdir(parents=True)
    (fake / "backbones" / "x.py").write_text("def f():\n    from transferkit.finetune.run import load_run\n")
    assert _imports(fake / "backbones" / "x.py") == {"transferkit.finetune.run"}
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    try:
        test_every_import_goes_down_the_layers()
    except AssertionError as e:
        assert "backbones/x.py imports transferkit.finetune.run" in str(e)
    else:
        raise AssertionError("an upward import was not reported")


def test_finetune_loads_no_adapt_module():
    code = ("import sys, transferkit.finetune, transferkit.finetune.loop; "
            "print(sorted(m for m in sys.modules if m.startswith('transferkit.adapt')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_imports_no_heavy_library():
    """`transferkit --help` and every `transferkit COMMAND --help` answer at once: no torch, transformers, sklearn
    or pandas is imported behind them (checked by the module set, not by wall time)."""
    code = """
import sys
from transferkit.cli import app, main
names = [None] + [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
for name in names:
    sys.argv = ["transferkit", *([name] if name else []), "--help"]
    try:
        main()
    except SystemExit as e:
        assert e.code == 0, (name, e.code)
heavy = ("torch", "transformers", "sklearn", "pandas", "timm", "accelerate", "numpy")
print("COMMANDS", len(names) - 1, "HEAVY", sorted(m for m in heavy if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    last = out.strip().splitlines()[-1]
    assert last.endswith("HEAVY []"), last
    assert int(last.split()[1]) >= 11
