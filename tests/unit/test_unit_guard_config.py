"""Unit tests for the guard.* settings: defaults, environment, validation naming the setting, secrets."""
from __future__ import annotations

import pytest

from statesync import config
from statesync.errors import ConfigError
from statesync.guard.settings import GuardSettings


def load(env=None, **flags):
    return config.load({"node": "sat1", **{k.replace("__", "."): v for k, v in flags.items()}}, env=env or {})


def error(env=None, **flags) -> str:
    with pytest.raises(ConfigError) as info:
        load(env, **flags)
    return str(info.value)


def test_the_guard_defaults_are_exit_two_confirmations_a_minute_and_ten_minutes():
    g = load().guard
    assert g == GuardSettings()
    assert (g.trigger, g.confirmations, g.check_interval, g.purge_window) == ("exit", 2, 60.0, 600.0)


def test_every_guard_setting_has_a_statesync_guard_environment_variable():
    for s in config.SCHEMA:
        if s.name.startswith("guard."):
            assert s.env == ("STATESYNC_GUARD_" + s.name[6:].upper(),), s.name


def test_the_environment_sets_the_trigger_and_its_settings(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pass\n")
    env = {"STATESYNC_GUARD_TRIGGER": "api", "STATESYNC_GUARD_API_URL": "https://icinga2:5665/",
           "STATESYNC_GUARD_API_USER": "statesync", "STATESYNC_GUARD_API_PASSWORD_FILE": str(pw),
           "STATESYNC_GUARD_CONFIRMATIONS": "3", "STATESYNC_GUARD_CONFIRM_INTERVAL": "0.5"}
    g = load(env).guard
    assert (g.trigger, g.api_url, g.api_user, g.api_password) == ("api", "https://icinga2:5665", "statesync",
                                                                  "s3cret-pass")
    assert (g.confirmations, g.confirm_interval) == (3, 0.5)


def test_the_api_password_never_shows_in_the_config_repr(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pass")
    cfg = load(guard__trigger="api", guard__api_url="https://icinga2:5665", guard__api_user="u",
               guard__api_password_file=str(pw))
    assert "s3cret-pass" not in repr(cfg) and "s3cret-pass" not in repr(cfg.guard)


@pytest.mark.parametrize("trigger, missing", [
    ("api", "guard.api_url"), ("signal", "guard.pidfile"), ("docker", "guard.docker_container"),
    ("command", "guard.command"),
])
def test_a_trigger_without_what_it_needs_is_an_error_naming_the_setting(trigger, missing):
    assert error(guard__trigger=trigger).startswith(f"{missing}: required when guard.trigger is {trigger}")


@pytest.mark.parametrize("flags, setting", [
    ({"guard.trigger": "reboot"}, "guard.trigger"),
    ({"guard.confirmations": "0"}, "guard.confirmations"),
    ({"guard.confirm_interval": "soon"}, "guard.confirm_interval"),
    ({"guard.purge_window": "-1"}, "guard.purge_window"),
    ({"guard.signal": "NOSUCH"}, "guard.signal"),
    ({"guard.api_url": "ftp://x"}, "guard.api_url"),
    ({"guard.api_url": "https://user:pw@x"}, "guard.api_url"),
    ({"guard.docker_container": "bad name!"}, "guard.docker_container"),
    ({"guard.command": "unbalanced 'quote"}, "guard.command"),
    ({"guard.command": "[1, 2]"}, "guard.command"),
    ({"guard.api_password_file": "/nonexistent/pw"}, "guard.api_password_file"),
    ({"guard.api_cacert": "/nonexistent/ca.crt"}, "guard.api_cacert"),
])
def test_invalid_guard_values_are_errors_naming_the_setting(flags, setting):
    with pytest.raises(ConfigError) as info:
        config.load({"node": "sat1", **flags}, env={})
    assert str(info.value).startswith(f"{setting}: ")


def test_signals_are_accepted_by_short_name_full_name_or_number():
    assert load(guard__signal="hup").guard.signal == "SIGHUP"
    assert load(guard__signal="SIGUSR1").guard.signal == "SIGUSR1"
    assert load(guard__signal="15").guard.signal == "SIGTERM"


def test_the_command_comes_as_a_toml_list_a_json_array_or_words_and_never_through_a_shell(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[guard]\ntrigger = "command"\ncommand = ["/bin/restart", "a b"]\n')
    assert config.load({"node": "n"}, env={}, config_file=str(f)).guard.command == ("/bin/restart", "a b")
    env = {"STATESYNC_GUARD_TRIGGER": "command", "STATESYNC_GUARD_COMMAND": '["/bin/restart", "x; rm -rf /"]'}
    assert load(env).guard.command == ("/bin/restart", "x; rm -rf /")
    env["STATESYNC_GUARD_COMMAND"] = "/bin/restart 'two words' three"
    assert load(env).guard.command == ("/bin/restart", "two words", "three")


def test_plain_http_to_the_api_is_refused_except_on_loopback(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("pw")
    common = dict(guard__trigger="api", guard__api_user="u", guard__api_password_file=str(pw))
    assert error(guard__api_url="http://icinga2:5665", **common).startswith("guard.api_url: use https://")
    assert load(guard__api_url="http://127.0.0.1:5665", **common).guard.api_url == "http://127.0.0.1:5665"


def test_a_password_file_that_is_not_utf8_is_one_config_error_naming_the_setting(tmp_path):
    pw = tmp_path / "pw"
    pw.write_bytes(b"\xff\xfesecret")
    with pytest.raises(ConfigError, match=r"guard.api_password_file: .* is not UTF-8 text"):
        load(guard__trigger="api", guard__api_url="https://icinga2:5665", guard__api_user="u",
             guard__api_password_file=str(pw))
