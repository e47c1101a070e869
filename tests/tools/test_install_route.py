"""The detectron2 sdist install route (dev/install_detectron2.py) and the compat checks."""
from pathlib import Path

import pytest
from detectron2.config import get_cfg

import zsdet
from zsdet.compat import check_config_supported, compiled_ops_available



def test_stub_extension_written_only_when_sources_absent(tmp_path, load_script):
    installer = load_script("dev/install_detectron2.py")
    root = tmp_path / "pb1-detectron2-0.6"
    (root / "detectron2" / "layers").mkdir(parents=True)
    (root / "setup.py").write_text("")
    assert installer.find_source_root(str(tmp_path)) == str(root)
    path = Path(installer.add_stub_extension(str(root)))
    assert "PYBIND11_MODULE" in path.read_text()
    assert "get_compiler_version" in path.read_text()  # collect_env (default_setup) calls it
    path.write_text("// real sources")
    installer.add_stub_extension(str(root))
    assert path.read_text() == "// real sources"


def test_find_source_root_rejects_ambiguous(tmp_path, load_script):
    installer = load_script("dev/install_detectron2.py")
    with pytest.raises(RuntimeError, match="expected one detectron2 source tree"):
        installer.find_source_root(str(tmp_path))


def test_pillow_alias_for_detectron2_v06():
    import PIL.Image

    assert PIL.Image.LINEAR == PIL.Image.BILINEAR
    import detectron2.data.transforms  # noqa: F401  (evaluates Image.LINEAR at import in v0.6)


def test_configs_needing_compiled_ops_fail_clearly():
    if compiled_ops_available():
        pytest.skip("this detectron2 has its compiled ops")
    cfg = get_cfg()
    zsdet.add_zsdet_config(cfg)
    check_config_supported(cfg)  # the default config needs none of them
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, False, False]
    with pytest.raises(RuntimeError, match="DEFORM_ON_PER_STAGE"):
        check_config_supported(cfg)
