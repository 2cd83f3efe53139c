import subprocess
import sys
import textwrap


def test_server_and_analysis_import_without_torch():
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class BlockTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"torch", "torchvision", "timm", "open_clip", "lucent", "kornia"}:
                    raise ImportError(f"{name} is blocked in this test")

        sys.meta_path.insert(0, BlockTorch())
        import experiment_server, analysis
        import experiment_server.export, experiment_server.participant, analysis.report, analysis.estimate
        import stimuli.bundle, stimuli.specs, stimuli.study
        import psychinterp.cli
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
