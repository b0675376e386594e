"""Layering: d2ext never imports the methods; the methods import as d2ext_projects even
with another `projects/` folder first on sys.path; an import error inside a method
reaches the user with its cause."""
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        cwd=REPO_ROOT, env={**os.environ, **env},
    )


def test_importing_d2ext_imports_no_method():
    proc = _python("import d2ext, sys; print('projects' in sys.modules, 'd2ext_projects' in sys.modules)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["False", "False"]


def test_methods_load_with_a_foreign_projects_folder_first_on_the_path(tmp_path):
    # detectron2's source tree has a `projects/` folder; users put it on PYTHONPATH.
    (tmp_path / "projects").mkdir()
    (tmp_path / "projects" / "__init__.py").write_text("")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = _python(
        "import d2ext_projects, d2ext; cfg = d2ext.get_cfg(); "
        "print(d2ext_projects.METHODS, cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES, cfg.MODEL.ICNET is not None)",
        **env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'maskformer'" in proc.stdout and "'pointrend'" in proc.stdout and "True" in proc.stdout
    demo = subprocess.run(
        [sys.executable, "tools/demo.py", "--help"], capture_output=True, text=True, timeout=300,
        cwd=REPO_ROOT, env={**os.environ, **env},
    )
    assert demo.returncode == 0, demo.stderr[-2000:]


def test_an_import_error_inside_a_method_propagates_with_its_cause():
    # sys.modules[name] = None makes `import scipy` raise ImportError (MaskFormer's matcher needs it).
    proc = _python("import sys; sys.modules['scipy'] = None; import d2ext_projects")
    assert proc.returncode != 0
    assert "No module named 'scipy" in proc.stderr and "maskformer" in proc.stderr  # the cause, where it arose
    # d2ext alone still works, and says nothing about the methods' keys it does not know.
    proc = _python("import sys; sys.modules['scipy'] = None; import d2ext; print(hasattr(d2ext.get_cfg().MODEL, 'MASK_FORMER'))")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "False"
