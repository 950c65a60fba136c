import pytest

from styleforge.core.config import ParamsError, load_params, parse_params
from tests.conftest import REPO


def test_repo_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.faces.resolution in (256, 1024)
    assert {s.mode for s in params.scrape.sources} == {"static", "browser"}


def test_unknown_key_is_named():
    with pytest.raises(ParamsError, match=r"faces\.resolutoin: unknown key"):
        parse_params({"faces": {"resolutoin": 256}})


def test_wrong_type_names_key_and_expectation():
    with pytest.raises(ParamsError) as info:
        parse_params({"faces": {"resolution": 300}, "augment": {"copies": "many"}})
    message = str(info.value)
    assert "faces.resolution" in message and "256" in message and "1024" in message
    assert "augment.copies" in message and "integer" in message


def test_source_url_must_be_http():
    with pytest.raises(ParamsError, match=r"scrape\.sources\.0\.url"):
        parse_params({"scrape": {"sources": [{"url": "ftp://example.org/x"}]}})


def test_bad_yaml_and_missing_file(tmp_path):
    (tmp_path / "params.yaml").write_text("faces: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_safe_preset_rejects_many_copies():
    with pytest.raises(ParamsError, match="safe preset"):
        parse_params({"augment": {"preset": "safe", "copies": 3}})
