import subprocess
import sys
import textwrap


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_torchvision_timm_lucent_import_after_compat():
    result = run(
        """
        import torch
        from stimuli.compat import ensure_torchvision_importable, _extension_loads
        import importlib.util, pathlib
        tv_dir = pathlib.Path(next(iter(importlib.util.find_spec("torchvision").submodule_search_locations)))
        native = _extension_loads(tv_dir)
        registered = ensure_torchvision_importable()
        assert registered == (not native), (registered, native)
        import torchvision, timm, open_clip
        from lucent.optvis import objectives, param
        assert ensure_torchvision_importable() is False  # second call is a no-op
        print("ok", registered)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_compat_does_nothing_when_extension_loads():
    result = run(
        """
        import stimuli.compat as compat
        compat._extension_loads = lambda _dir: True
        assert compat.ensure_torchvision_importable() is False
        assert compat._library is None
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr


def test_compat_does_nothing_after_torchvision_imported():
    result = run(
        """
        import sys, types
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        import stimuli.compat as compat
        assert compat.ensure_torchvision_importable() is False
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
