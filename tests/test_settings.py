"""playbooks.settings.setting: one accessor that reads Invoke's config and casts by the default's type."""
import pytest
from invoke import Config, Context

from playbooks.settings import SettingError, setting
from playbooks.settings.defaults import DEFAULTS


def ctx(**over):
    cfg = Config(defaults=DEFAULTS)
    for key, value in over.items():
        sub, name = key.split("__")
        cfg[sub][name] = value
    return Context(cfg)


def test_values_from_the_environment_come_as_text_and_are_cast_by_the_default():
    c = ctx(fleet__ssh_timeout="7.5", fleet__max_parallel="3", local__netns="1")
    assert setting(c, "fleet.ssh_timeout") == 7.5
    assert setting(c, "fleet.max_parallel") == 3
    assert setting(c, "local.netns") is True


def test_an_argument_beats_the_config_unless_it_is_unset():
    c = ctx(job__poll=4.0, fleet__name="cfg")
    assert setting(c, "job.poll", 0.5) == 0.5
    assert setting(c, "job.poll", None) == 4.0
    assert setting(c, "fleet.name", "") == "cfg"
    assert setting(c, "fleet.name", "flag") == "flag"


def test_a_bad_value_names_the_setting_and_where_to_fix_it():
    with pytest.raises(SettingError, match=r"fleet.ssh_timeout = 'soon' is not a float.*INVOKE_FLEET_SSH_TIMEOUT"):
        setting(ctx(fleet__ssh_timeout="soon"), "fleet.ssh_timeout")
    with pytest.raises(SettingError, match="local.netns"):
        setting(ctx(local__netns="maybe"), "local.netns")


def test_an_unknown_key_is_a_programming_error():
    with pytest.raises(KeyError, match="no setting 'fleet.nope'"):
        setting(ctx(), "fleet.nope")
