import subprocess
import sys
import textwrap


def test_server_and_analysis_import_and_serve_without_torch(tiny_bundle_dir, tmp_path):
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class BlockTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"torch", "torchvision", "timm", "open_clip", "lucent", "kornia"}:
                    raise ImportError(f"{{name}} is blocked in this test")

        sys.meta_path.insert(0, BlockTorch())
        import experiment_server, analysis
        import experiment_server.export, experiment_server.participant, analysis.report, analysis.estimate
        import experiment_server.admin, experiment_server.api_docs, experiment_server.wsgi, analysis.exclusions
        import contracts.bundle, stimuli.specs, stimuli.study
        import psychinterp.cli, psychinterp.scripted
        from experiment_server import create_app
        from psychinterp.scripted import run_session
        app = create_app({{"bundle_dir": "{tiny_bundle_dir}", "database_url": "sqlite:///{tmp_path / "db"}"}})
        run_session(app.test_client(), lambda trial: (0, 2))
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
