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


def _missing_keys(raw, model, where: str) -> list[str]:
    """Schema keys of model that the raw YAML mapping does not write, recursively (list items too)."""
    from pydantic import BaseModel

    missing = []
    for name in type(model).model_fields:
        key = f"{where}{name}"
        if not isinstance(raw, dict) or name not in raw:
            missing.append(key)
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            missing += _missing_keys(raw[name], value, key + ".")
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            for index, item in enumerate(value):
                missing += _missing_keys(raw[name][index], item, f"{key}.{index}.")
    return missing


@pytest.mark.parametrize("params_file", ["params.yaml", "recipes/base-faces/params.yaml"])
def test_every_schema_key_is_written_in_the_params_file(params_file):
    """DVC sees only what the file says: a value left to the schema's default changes unseen."""
    import yaml

    raw = yaml.safe_load((REPO / params_file).read_text())
    assert _missing_keys(raw, load_params(REPO / params_file), "") == []


def test_every_parameter_says_what_it_is_and_the_file_round_trips():
    import yaml

    from styleforge.core.config import Params, params_yaml

    text = params_yaml(Params())
    assert parse_params(yaml.safe_load(text)) == Params()
    keys = [line.split(":")[0].strip(" -") for line in text.splitlines() if ":" in line and not line.lstrip().startswith("#")]
    explained = {line.split(":")[0].strip(" -") for previous, line in zip(text.splitlines(), text.splitlines()[1:])
                 if previous.lstrip().startswith("#")}
    assert explained and all(key in explained or key == "url" for key in keys), set(keys) - explained
