"""Unit tests for statesync.config.load: precedence, parsing and validation.

Files live in tmp_path; the environment is always passed explicitly (never os.environ).
"""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from statesync import config
from statesync.config import DEFAULT_EXCLUDES, load
from statesync.consul.settings import Endpoint
from statesync.errors import EXIT_USAGE, ConfigError, exit_code_for
from statesync.snapshot.chunking import MAX_CHUNK_SIZE
from statesync.snapshot.layout import Layout

from ..cli_runner import run_cli
from ..support import clean_env

NODE = {"node": "testnode"}
TOKEN = "b1gs3cret-7c1e-4f00-9a9a-0123456789ab"


def cfg(flags=None, env=None, config_file=None):
    """Load with an explicit node (so the host name never matters) and an empty environment."""
    return load({**NODE, **(flags or {})}, {} if env is None else env, config_file)


def toml(tmp_path: Path, text: str, name: str = "statesync.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def config_error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        cfg(*args, **kwargs)
    return str(info.value)


# --- defaults -----------------------------------------------------------------------

def test_defaults_apply_when_nothing_is_set():
    c = cfg()
    assert c.root == Path("/var/lib/icinga2")
    assert c.prefix == "statesync/icinga2"
    assert c.node == "testnode"
    assert c.role is None  # no default role: run refuses to guess one
    assert c.path_filter.include == ("**",)
    assert c.path_filter.exclude == DEFAULT_EXCLUDES
    assert (c.keep, c.chunk_size) == (10, 352 * 1024)
    assert (c.debounce, c.max_wait) == (0.5, 5.0)
    assert (c.full_scan_interval, c.gc_interval, c.gc_grace) == (300.0, 600.0, 300.0)
    assert (c.log_format, c.log_level) == ("auto", "info")
    assert c.layout == Layout("statesync/icinga2", "testnode")


def test_consul_defaults_to_plain_http_on_localhost_without_a_token():
    c = cfg().consul
    assert c.endpoints == (Endpoint("http", "127.0.0.1", 8500),)
    assert c.token == ""
    assert (c.cacert, c.client_cert, c.client_key) == ("", "", "")
    assert c.verify is True
    assert c.timeout == 10.0
    assert c.txn_max_ops == 64


def test_the_node_defaults_to_the_short_host_name(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "web1.example.com")
    assert load({}, {}).node == "web1"


def test_an_unusable_host_name_asks_for_an_explicit_node(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "_bad host")
    with pytest.raises(ConfigError) as info:
        load({}, {})
    assert str(info.value).startswith("node: ")


def test_flags_that_are_none_are_ignored():
    assert cfg({"keep": None, "prefix": None}).keep == 10


def test_the_empty_environment_is_used_as_given_and_not_replaced_by_the_real_one(monkeypatch):
    monkeypatch.setenv("STATESYNC_KEEP", "7")
    assert cfg(env={}).keep == 10


# --- precedence ---------------------------------------------------------------------

FILE_TEXT = """
root = "/srv/file-root"
prefix = "from/file"
keep = 3
debounce = 1
exclude = ["a/", "*.bak"]

[consul]
addr = ["file-host:1111", "https://file-other:2222"]
timeout = 20

[log]
level = "debug"
"""


def test_the_file_overrides_the_defaults(tmp_path):
    c = cfg(config_file=toml(tmp_path, FILE_TEXT))
    assert c.root == Path("/srv/file-root")
    assert c.prefix == "from/file"
    assert c.keep == 3
    assert c.debounce == 1.0 and isinstance(c.debounce, float)
    assert c.path_filter.exclude == DEFAULT_EXCLUDES + ("a/", "*.bak")
    assert c.consul.endpoints == (Endpoint("http", "file-host", 1111), Endpoint("https", "file-other", 2222))
    assert c.consul.timeout == 20.0
    assert c.log_level == "debug"
    assert c.log_format == "auto"  # not in the file: still the default


def test_the_environment_overrides_the_file(tmp_path):
    env = {"STATESYNC_KEEP": "4", "STATESYNC_PREFIX": "from/env", "CONSUL_HTTP_ADDR": "env-host:3333",
           "STATESYNC_LOG_LEVEL": "warning"}
    c = cfg(env=env, config_file=toml(tmp_path, FILE_TEXT))
    assert c.keep == 4
    assert c.prefix == "from/env"
    assert c.consul.endpoints == (Endpoint("http", "env-host", 3333),)
    assert c.log_level == "warning"
    assert c.root == Path("/srv/file-root")  # not in the environment: still the file's


def test_flags_override_the_environment(tmp_path):
    env = {"STATESYNC_KEEP": "4", "STATESYNC_PREFIX": "from/env", "STATESYNC_NODE": "envnode"}
    c = load({"keep": 5, "node": "flagnode"}, env, toml(tmp_path, FILE_TEXT))
    assert c.keep == 5
    assert c.node == "flagnode"
    assert c.prefix == "from/env"


def test_an_empty_environment_variable_is_ignored(tmp_path):
    c = cfg(env={"STATESYNC_KEEP": "", "CONSUL_HTTP_ADDR": ""}, config_file=toml(tmp_path, FILE_TEXT))
    assert c.keep == 3
    assert c.consul.endpoints[0].host == "file-host"


def test_statesync_config_names_the_file_when_none_is_given(tmp_path):
    path = toml(tmp_path, "keep = 6\n")
    assert cfg(env={"STATESYNC_CONFIG": path}).keep == 6


def test_an_explicit_config_file_wins_over_statesync_config(tmp_path):
    env = {"STATESYNC_CONFIG": toml(tmp_path, "keep = 6\n", "env.toml")}
    assert cfg(env=env, config_file=toml(tmp_path, "keep = 7\n", "flag.toml")).keep == 7


def test_the_node_can_come_from_the_environment():
    assert load({}, {"STATESYNC_NODE": "envnode"}).node == "envnode"


# --- environment value parsing -----------------------------------------------------

def test_numbers_from_the_environment_are_parsed():
    c = cfg(env={"STATESYNC_KEEP": "7", "STATESYNC_DEBOUNCE": "0.25", "STATESYNC_MAX_WAIT": "2",
                 "STATESYNC_CHUNK_SIZE": "4096", "STATESYNC_CONSUL_TXN_MAX_OPS": "128"})
    assert (c.keep, c.debounce, c.max_wait, c.chunk_size, c.consul.txn_max_ops) == (7, 0.25, 2.0, 4096, 128)


def test_patterns_from_the_environment_are_a_comma_separated_list_without_blanks():
    c = cfg(env={"STATESYNC_EXCLUDE": "api/log/, *.bak,, ", "STATESYNC_INCLUDE": "ca/,certs/"})
    assert c.path_filter.exclude == DEFAULT_EXCLUDES + ("api/log/", "*.bak")
    assert c.path_filter.include == ("ca/", "certs/")


def test_the_prefix_loses_leading_and_trailing_slashes():
    assert cfg({"prefix": "/statesync/x/"}).prefix == "statesync/x"


def test_a_relative_root_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cfg({"root": "data"}).root == tmp_path / "data"


def test_max_wait_equal_to_debounce_is_accepted():
    c = cfg({"debounce": 2, "max_wait": 2})
    assert c.max_wait == c.debounce == 2.0


# --- consul address ---------------------------------------------------------------

@pytest.mark.parametrize("addr,expected", [
    ("http://consul:8500", Endpoint("http", "consul", 8500)),
    ("https://consul:8501", Endpoint("https", "consul", 8501)),
    ("consul.service:9500", Endpoint("http", "consul.service", 9500)),
    ("10.0.0.1:8500", Endpoint("http", "10.0.0.1", 8500)),
    ("consul", Endpoint("http", "consul", 8500)),
    ("https://consul", Endpoint("https", "consul", 8500)),
    ("http://consul:8500/", Endpoint("http", "consul", 8500)),
    ("  consul:1  ", Endpoint("http", "consul", 1)),
    ("[::1]:8500", Endpoint("http", "::1", 8500)),
    ("[::1]", Endpoint("http", "::1", 8500)),
    ("https://[2001:db8::1]:8501", Endpoint("https", "2001:db8::1", 8501)),
    ("::1", Endpoint("http", "::1", 8500)),
])
def test_consul_http_addr_is_parsed_like_consuls_cli(addr, expected):
    assert cfg(env={"CONSUL_HTTP_ADDR": addr}).consul.endpoints == (expected,)


def test_statesync_consul_addr_wins_over_consul_http_addr():
    env = {"CONSUL_HTTP_ADDR": "generic:1", "STATESYNC_CONSUL_ADDR": "specific:2"}
    assert cfg(env=env).consul.endpoints == (Endpoint("http", "specific", 2),)


def test_several_comma_separated_addresses_give_several_endpoints():
    c = cfg(env={"STATESYNC_CONSUL_ADDR": "a:1, https://b:2 ,c"})
    assert c.consul.endpoints == (Endpoint("http", "a", 1), Endpoint("https", "b", 2),
                                  Endpoint("http", "c", 8500))


def test_consul_http_ssl_makes_bare_addresses_use_https_but_keeps_explicit_schemes():
    env = {"CONSUL_HTTP_SSL": "true", "CONSUL_HTTP_ADDR": "a:8501,http://b:8500"}
    assert cfg(env=env).consul.endpoints == (Endpoint("https", "a", 8501), Endpoint("http", "b", 8500))


@pytest.mark.parametrize("value", ["false", "FALSE", "0", "no", "off", " false "])
def test_consul_http_ssl_verify_false_turns_verification_off(value):
    assert cfg(env={"CONSUL_HTTP_SSL_VERIFY": value}).consul.verify is False


@pytest.mark.parametrize("value", ["true", "1", "yes", "on"])
def test_consul_http_ssl_verify_true_keeps_verification_on(value):
    assert cfg(env={"CONSUL_HTTP_SSL_VERIFY": value}).consul.verify is True


def test_statesync_ssl_verify_wins_over_consuls_variable():
    env = {"CONSUL_HTTP_SSL_VERIFY": "false", "STATESYNC_CONSUL_SSL_VERIFY": "true"}
    assert cfg(env=env).consul.verify is True


def test_an_ipv6_endpoint_renders_as_a_bracketed_url():
    (endpoint,) = cfg(env={"CONSUL_HTTP_ADDR": "[::1]:8500"}).consul.endpoints
    assert str(endpoint) == "http://[::1]:8500"


@pytest.mark.parametrize("addr", ["[::1]8600", "[::1"])
def test_a_malformed_bracketed_address_is_rejected(addr):
    with pytest.raises(ConfigError):
        cfg(env={"CONSUL_HTTP_ADDR": addr})


def test_a_trailing_comma_in_the_address_list_is_ignored():
    assert cfg(env={"CONSUL_HTTP_ADDR": "a:1,"}).consul.endpoints == (Endpoint("http", "a", 1),)


# --- token ----------------------------------------------------------------------------

def test_consul_http_token_sets_the_token_and_is_never_shown():
    c = cfg(env={"CONSUL_HTTP_TOKEN": TOKEN})
    assert c.consul.token == TOKEN
    assert TOKEN not in repr(c)
    assert TOKEN not in str(c)
    assert TOKEN not in repr(c.consul)


def test_consul_http_token_file_is_read_and_the_token_is_never_shown(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n", encoding="utf-8")
    c = cfg(env={"CONSUL_HTTP_TOKEN_FILE": str(path)})
    assert c.consul.token == TOKEN
    assert TOKEN not in repr(c)
    assert TOKEN not in repr(c.consul)


def test_a_token_file_takes_precedence_over_a_token_variable_as_in_consul(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN, encoding="utf-8")
    c = cfg(env={"CONSUL_HTTP_TOKEN": "other", "CONSUL_HTTP_TOKEN_FILE": str(path)})
    assert c.consul.token == TOKEN


def test_statesync_token_file_wins_over_consuls_token_file(tmp_path):
    (tmp_path / "a").write_text("token-a", encoding="utf-8")
    (tmp_path / "b").write_text("token-b", encoding="utf-8")
    env = {"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "a"), "STATESYNC_CONSUL_TOKEN_FILE": str(tmp_path / "b")}
    assert cfg(env=env).consul.token == "token-b"


def test_a_missing_token_file_is_a_config_error_naming_the_setting(tmp_path):
    message = config_error(env={"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "nope")})
    assert message.startswith("consul.token_file: ")


def test_a_token_file_in_the_config_file_is_read(tmp_path):
    (tmp_path / "token").write_text(TOKEN, encoding="utf-8")
    path = toml(tmp_path, f'[consul]\ntoken_file = "{tmp_path / "token"}"\n')
    assert cfg(config_file=path).consul.token == TOKEN


def test_a_token_of_the_wrong_type_is_reported_without_its_value():
    with pytest.raises(ConfigError) as info:
        cfg({"consul.token": [TOKEN]})
    assert str(info.value).startswith("consul.token: ")
    assert TOKEN not in str(info.value)


# --- bad values ------------------------------------------------------------------------

BAD_FLAGS = [
    ("root", ""), ("root", 5),
    ("prefix", ""), ("prefix", "a//b"), ("prefix", "a/../b"), ("prefix", "with space"), ("prefix", 1),
    ("node", ""), ("node", "bad node"), ("node", "-x"), ("node", "a/b"), ("node", 5),
    ("role", "leader"), ("role", ""),
    ("include", "/abs"), ("include", 5), ("include", [1]),
    ("exclude", ["ok", "/abs"]), ("exclude", {"a": 1}),
    ("keep", 0), ("keep", 1001), ("keep", "ten"), ("keep", True),
    ("chunk_size", 4095), ("chunk_size", MAX_CHUNK_SIZE + 1),
    ("debounce", -1), ("debounce", 61), ("debounce", "soon"), ("debounce", "nan"), ("debounce", "inf"),
    ("max_wait", 0.05), ("max_wait", 601),
    ("full_scan_interval", 0.5), ("gc_interval", 0), ("gc_interval", 86401), ("gc_grace", -1),
    ("consul.addr", "ftp://consul"), ("consul.addr", "consul:0"), ("consul.addr", "consul:65536"),
    ("consul.addr", "consul:abc"), ("consul.addr", ""), ("consul.addr", "http://"),
    ("consul.addr", "consul/path"), ("consul.addr", []), ("consul.addr", 8500),
    ("consul.token", 5),
    ("consul.ssl", "maybe"), ("consul.ssl_verify", "sometimes"), ("consul.ssl_verify", 1),
    ("consul.timeout", 0.1), ("consul.timeout", 301),
    ("consul.txn_max_ops", 1), ("consul.txn_max_ops", 1025),
    ("log.format", "xml"), ("log.level", "trace"),
]


@pytest.mark.parametrize("name,value", BAD_FLAGS)
def test_a_bad_flag_value_is_a_config_error_starting_with_the_setting_name(name, value):
    message = config_error({name: value})
    assert message.startswith(f"{name}: "), message


@pytest.mark.parametrize("var,value,name", [
    ("STATESYNC_KEEP", "0", "keep"), ("STATESYNC_KEEP", "1.5", "keep"),
    ("STATESYNC_DEBOUNCE", "soon", "debounce"), ("STATESYNC_PREFIX", "a//b", "prefix"),
    ("STATESYNC_NODE", "bad node", "node"), ("STATESYNC_ROLE", "leader", "role"),
    ("CONSUL_HTTP_ADDR", "ftp://consul", "consul.addr"), ("STATESYNC_CONSUL_ADDR", "x:y", "consul.addr"),
    ("CONSUL_HTTP_SSL", "maybe", "consul.ssl"), ("CONSUL_HTTP_SSL_VERIFY", "nah", "consul.ssl_verify"),
    ("STATESYNC_EXCLUDE", "/abs", "exclude"), ("STATESYNC_LOG_LEVEL", "loud", "log.level"),
])
def test_a_bad_environment_value_is_a_config_error_starting_with_the_setting_name(var, value, name):
    env = {var: value}
    with pytest.raises(ConfigError) as info:
        load({}, env) if var == "STATESYNC_NODE" else cfg(env=env)
    assert str(info.value).startswith(f"{name}: "), str(info.value)


@pytest.mark.parametrize("text,name", [
    ("keep = 0\n", "keep"), ('keep = "many"\n', "keep"), ("debounce = 100\n", "debounce"),
    ('prefix = "/"\n', "prefix"), ('[consul]\naddr = "ftp://x"\n', "consul.addr"),
    ("[consul]\nssl_verify = 3\n", "consul.ssl_verify"), ("exclude = 5\n", "exclude"),
])
def test_a_bad_file_value_is_a_config_error_starting_with_the_setting_name(tmp_path, text, name):
    message = config_error(config_file=toml(tmp_path, text))
    assert message.startswith(f"{name}: "), message


def test_a_config_error_exits_with_the_usage_code():
    with pytest.raises(ConfigError) as info:
        cfg({"keep": 0})
    assert exit_code_for(info.value) == EXIT_USAGE == 2


def test_max_wait_below_debounce_is_a_config_error():
    assert config_error({"debounce": 3, "max_wait": 2}).startswith("max_wait: ")


def test_max_wait_below_debounce_from_different_sources_is_a_config_error(tmp_path):
    message = config_error(env={"STATESYNC_MAX_WAIT": "1"}, config_file=toml(tmp_path, "debounce = 2\n"))
    assert message.startswith("max_wait: ")


def test_a_fractional_count_in_the_file_is_rejected_rather_than_truncated(tmp_path):
    with pytest.raises(ConfigError):
        cfg(config_file=toml(tmp_path, "keep = 2.5\n"))


def test_a_malformed_glob_is_a_config_error_naming_the_setting():
    assert config_error({"exclude": ["[z-a]"]}).startswith("exclude: ")


# --- TLS files ---------------------------------------------------------------------------

def test_a_client_certificate_without_its_key_is_a_config_error(tmp_path):
    (tmp_path / "client.crt").write_text("cert")
    message = config_error(env={"CONSUL_CLIENT_CERT": str(tmp_path / "client.crt")})
    assert message.startswith("consul.client_key: ")


def test_a_client_key_without_its_certificate_is_a_config_error(tmp_path):
    (tmp_path / "client.key").write_text("key")
    message = config_error(env={"CONSUL_CLIENT_KEY": str(tmp_path / "client.key")})
    assert message.startswith("consul.client_key: ")


def test_a_client_certificate_with_its_key_and_a_ca_are_accepted(tmp_path):
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text(name)
    env = {"CONSUL_CACERT": str(tmp_path / "ca.crt"), "CONSUL_CLIENT_CERT": str(tmp_path / "client.crt"),
           "CONSUL_CLIENT_KEY": str(tmp_path / "client.key")}
    c = cfg(env=env).consul
    assert (c.cacert, c.client_cert, c.client_key) == (env["CONSUL_CACERT"], env["CONSUL_CLIENT_CERT"],
                                                       env["CONSUL_CLIENT_KEY"])


@pytest.mark.parametrize("var,name", [("CONSUL_CACERT", "consul.cacert"),
                                      ("CONSUL_CLIENT_CERT", "consul.client_cert"),
                                      ("CONSUL_CLIENT_KEY", "consul.client_key")])
def test_a_tls_file_that_does_not_exist_is_a_config_error_naming_the_setting(tmp_path, var, name):
    message = config_error(env={var: str(tmp_path / "missing.pem")})
    assert message.startswith(f"{name}: ")


# --- the config file itself ------------------------------------------------------------

@pytest.mark.parametrize("text,name", [("colour = 1\n", "colour"), ('[consul]\ntokn = "x"\n', "consul.tokn"),
                                       ("[extra]\nkeep = 1\n", "extra.keep"), ('consul = "x"\n', "consul")])
def test_an_unknown_key_in_the_file_is_a_config_error_naming_it(tmp_path, text, name):
    message = config_error(config_file=toml(tmp_path, text))
    assert message.startswith(f"{name}: unknown setting")


@pytest.mark.parametrize("text", ["keep = \n", "[consul\n", "keep = 1\nkeep = 2\n", "= 3\n"])
def test_invalid_toml_is_a_config_error(tmp_path, text):
    message = config_error(config_file=toml(tmp_path, text))
    assert message.startswith("config: ") and "not valid TOML" in message


def test_a_missing_config_file_is_a_config_error(tmp_path):
    missing = str(tmp_path / "nope.toml")
    message = config_error(config_file=missing)
    assert message.startswith("config: ") and missing in message


def test_a_missing_file_named_by_statesync_config_is_a_config_error(tmp_path):
    assert config_error(env={"STATESYNC_CONFIG": str(tmp_path / "nope.toml")}).startswith("config: ")


def test_a_directory_as_config_file_is_a_config_error(tmp_path):
    assert config_error(config_file=str(tmp_path)).startswith("config: ")


def test_an_empty_config_file_leaves_the_defaults(tmp_path):
    assert cfg(config_file=toml(tmp_path, "")) == cfg()


def test_the_parse_addr_default_scheme_applies_only_without_a_scheme():
    assert config.parse_addr("h:1", "https") == Endpoint("https", "h", 1)
    assert config.parse_addr("http://h:1", "https") == Endpoint("http", "h", 1)


# --- excludes add to the defaults ------------------------------------------------------

@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_an_exclude_pattern_is_added_to_the_default_excludes_from_every_source(tmp_path, source):
    c = {"flag": lambda: cfg({"exclude": ["*.bak"]}),
         "env": lambda: cfg(env={"STATESYNC_EXCLUDE": "*.bak"}),
         "file": lambda: cfg(config_file=toml(tmp_path, 'exclude = ["*.bak"]\n'))}[source]()
    assert c.path_filter.exclude == DEFAULT_EXCLUDES + ("*.bak",)
    assert c.path_filter.excluded("x.swp") and c.path_filter.excluded("x.tmp") and c.path_filter.excluded("x.bak")


@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_default_excludes_off_drops_the_defaults_from_every_source(tmp_path, source):
    c = {"flag": lambda: cfg({"default_excludes": False, "exclude": ["*.bak"]}),
         "env": lambda: cfg(env={"STATESYNC_DEFAULT_EXCLUDES": "false", "STATESYNC_EXCLUDE": "*.bak"}),
         "file": lambda: cfg(config_file=toml(tmp_path, 'default_excludes = false\nexclude = ["*.bak"]\n'))}[source]()
    assert c.path_filter.exclude == ("*.bak",)
    assert not c.path_filter.excluded("x.swp")


def test_default_excludes_must_be_a_boolean():
    assert config_error(env={"STATESYNC_DEFAULT_EXCLUDES": "perhaps"}).startswith("default_excludes: ")


# --- health -------------------------------------------------------------------------------

def test_health_max_failures_defaults_to_five_and_comes_from_the_environment():
    assert cfg().health_max_failures == 5
    assert cfg(env={"STATESYNC_HEALTH_MAX_FAILURES": "2"}).health_max_failures == 2


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "nan", "many", "1001"])
def test_a_bad_health_max_failures_is_a_config_error(value):
    message = config_error(env={"STATESYNC_HEALTH_MAX_FAILURES": value})
    assert message.startswith("health.max_failures: "), message


# --- files that are not text --------------------------------------------------------------

BAD_UTF8 = b"\xff\xfe not text \xc3\x28"


def test_a_config_file_that_is_not_utf8_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b'keep = "' + BAD_UTF8 + b'"\n')
    message = config_error(config_file=str(path))
    assert message.startswith("config: ") and str(path) in message and "UTF-8" in message


def test_an_encryption_key_file_that_is_not_utf8_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"statesync-key-v1:" + BAD_UTF8)
    message = config_error(env={"STATESYNC_ENCRYPTION_KEY_FILE": str(path)})
    assert message.startswith("encryption_key_file: ") and str(path) in message
    assert "xff" not in message and "statesync-key-v1" not in message


def test_a_token_file_that_is_not_utf8_is_a_config_error_without_its_bytes(tmp_path):
    path = tmp_path / "token"
    path.write_bytes(TOKEN.encode() + BAD_UTF8)
    message = config_error(env={"CONSUL_HTTP_TOKEN_FILE": str(path)})
    assert message.startswith("consul.token_file: ") and str(path) in message
    assert TOKEN not in message and "xff" not in message


@pytest.mark.parametrize("token", [TOKEN + "\nX-Injected: 1", TOKEN + " x", TOKEN + "\u00e9", "\x00" + TOKEN])
def test_a_token_an_http_header_cannot_carry_is_a_config_error_without_the_token(tmp_path, token):
    (tmp_path / "token").write_text(token, encoding="utf-8")
    message = config_error(env={"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "token")})
    assert message.startswith("consul.token_file: ") and TOKEN not in message
    assert config_error(env={"CONSUL_HTTP_TOKEN": token}).startswith("consul.token: ")


def test_a_key_file_read_as_bytes_that_are_not_ascii_is_a_key_format_error():
    from statesync.errors import KeyFormatError
    from statesync.snapshot.crypto import format_key, parse_key
    with pytest.raises(KeyFormatError):
        parse_key(b"statesync-key-v1:" + BAD_UTF8)
    key = bytes(range(32))
    assert parse_key((format_key(key) + "\n").encode()) == key


# --- typos are errors, and secrets need a key or an explicit opt-out (issue 15) -----------------

@pytest.mark.parametrize("var, hint", [
    ("STATESYNC_ENCRYPTION_KEYFILE", "STATESYNC_ENCRYPTION_KEY_FILE"),
    ("STATESYNC_RO0T", "STATESYNC_ROOT"),
    ("STATESYNC_ALLOW_PLAINTEXT_SECRET", "STATESYNC_ALLOW_PLAINTEXT_SECRETS"),
])
def test_an_unknown_statesync_variable_is_a_usage_error_naming_the_closest_known_one(var, hint):
    with pytest.raises(ConfigError) as info:
        cfg(env={var: "x"})
    assert str(info.value) == f"unknown variable {var} (did you mean {hint}?)"
    assert exit_code_for(info.value) == EXIT_USAGE


def test_an_unknown_variable_far_from_every_known_one_is_named_without_a_guess():
    assert config_error(env={"STATESYNC_ZZZZZZZZZZZZZZZZZZZZ": "1"}) == "unknown variable STATESYNC_ZZZZZZZZZZZZZZZZZZZZ"


def test_an_unknown_variable_is_refused_even_when_empty():
    assert config_error(env={"STATESYNC_NODES": ""}).startswith("unknown variable STATESYNC_NODES")


def test_variables_that_are_no_setting_but_belong_to_statesync_are_accepted():
    c = cfg(env={name: "x" for name in config.OTHER_VARIABLES if name != "STATESYNC_CONFIG"})
    assert c.node == "testnode"


def test_every_setting_variable_is_a_known_variable():
    assert {v for s in config.SCHEMA for v in s.env if v.startswith("STATESYNC_")} <= config.KNOWN_VARIABLES


def test_other_variables_are_left_alone():
    assert cfg(env={"CONSUL_HTTP_TOKEN_FILEX": "1", "STATESYNCROOT": "x", "HOME": "/root"}).node == "testnode"


def test_an_unknown_key_in_the_file_names_the_closest_setting(tmp_path):
    message = config_error(config_file=toml(tmp_path, 'encryption_keyfile = "/k"\n'))
    assert message.startswith("encryption_keyfile: unknown setting in ")
    assert message.endswith("(did you mean encryption_key_file?)")


def test_an_unknown_nested_key_in_the_file_names_its_path_and_the_closest_setting(tmp_path):
    message = config_error(config_file=toml(tmp_path, '[consul]\ntoken_fil = "/t"\n'))
    assert message.startswith("consul.token_fil: unknown setting in ")
    assert message.endswith("(did you mean consul.token_file?)")


def test_plaintext_secrets_are_refused_unless_allowed():
    assert cfg().sealing.plaintext_allowed is False
    assert cfg(env={"STATESYNC_ALLOW_PLAINTEXT_SECRETS": "true"}).sealing.plaintext_allowed is True
    assert cfg({"allow_plaintext_secrets": True}).sealing.plaintext_allowed is True


def test_the_role_is_taken_from_the_environment_and_has_no_default():
    assert cfg(env={"STATESYNC_ROLE": "satellite"}).role == "satellite"
    assert cfg().role is None


# -- roots: the defaults follow the named subtrees -----------------------------------------

ROOTS = "state=var/lib/icinga2,config=etc/icinga2"


def test_with_roots_the_scope_is_the_named_subtrees():
    c = cfg({"root": "/data", "roots": ROOTS})
    assert c.path_filter.scope == ("etc/icinga2", "var/lib/icinga2")
    assert c.state_dir == Path("/data/var/lib/icinga2")
    assert cfg({"root": "/data"}).path_filter.scope == ()


def test_with_roots_the_default_excludes_apply_below_the_state_subtree():
    excludes = cfg({"roots": ROOTS}).path_filter.exclude
    assert "var/lib/icinga2/api/log/" in excludes and "var/lib/icinga2/api/zones-stage/" in excludes
    assert "**/*.tmp" in excludes and "api/log/" not in excludes
    assert cfg({"roots": ROOTS, "exclude": ["var/lib/icinga2/big/"]}).path_filter.exclude[-1] == "var/lib/icinga2/big/"


def test_with_roots_the_default_secrets_are_the_state_keys_and_the_configs_ticket_salt_and_api_passwords():
    assert cfg({"roots": ROOTS}).sealing.patterns == (
        "var/lib/icinga2/ca/ca.key", "var/lib/icinga2/certs/*.key",
        "etc/icinga2/constants.conf", "etc/icinga2/conf.d/api-users.conf", "etc/icinga2/statesync-api-user.conf")
    # without a root named config there is no config to protect
    assert cfg({"roots": "state=var/lib/icinga2"}).sealing.patterns == (
        "var/lib/icinga2/ca/ca.key", "var/lib/icinga2/certs/*.key")
    assert cfg().sealing.patterns == config.DEFAULT_ENCRYPT


def test_encrypt_patterns_the_user_gives_stay_relative_to_root_with_roots(tmp_path):
    assert cfg({"roots": ROOTS, "encrypt": ["secrets/*"]}).sealing.patterns == ("secrets/*",)
    assert cfg({"roots": ROOTS}, env={"STATESYNC_ENCRYPT": "a/b"}).sealing.patterns == ("a/b",)
    path = toml(tmp_path, 'roots = ["state=var/lib/icinga2", "config=etc/icinga2"]\nencrypt = ["ca/ca.key"]\n')
    assert cfg(config_file=path).sealing.patterns == ("ca/ca.key",)


# --- every error at once ------------------------------------------------------------------

def test_three_bad_values_from_file_environment_and_flag_are_three_lines_each_naming_its_source(tmp_path):
    path = toml(tmp_path, "keep = 0\n")
    with pytest.raises(ConfigError) as info:
        load({"node": "bad node"}, {"STATESYNC_DEBOUNCE": "soon"}, path)
    assert str(info.value).splitlines() == [
        "node: 'bad node' is not a node name (letters, digits, '.', '_', '-') (from the command line)",
        f"keep: must be between 1 and 1000, got 0 (in {path})",
        "debounce: expected a number, got 'soon' (from STATESYNC_DEBOUNCE)",
    ]
    assert exit_code_for(info.value, "backup") == EXIT_USAGE


def test_three_bad_values_are_three_lines_on_stderr_and_exit_2(tmp_path):
    path = toml(tmp_path, "keep = 0\n")
    env = {**clean_env(), "STATESYNC_DEBOUNCE": "soon"}
    proc = run_cli("snapshots", "--config", path, "--node", "bad node", env=env)
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.splitlines() == [
        "statesync: error: node: 'bad node' is not a node name (letters, digits, '.', '_', '-') (from the command line)",
        f"statesync: error: keep: must be between 1 and 1000, got 0 (in {path})",
        "statesync: error: debounce: expected a number, got 'soon' (from STATESYNC_DEBOUNCE)",
    ]


def test_unknown_keys_and_variables_are_all_reported_with_the_bad_values(tmp_path):
    path = toml(tmp_path, "kep = 3\ncolour = 1\n")
    lines = config_error(env={"STATESYNC_KEPP": "3", "STATESYNC_LOG_LEVEL": "loud"}, config_file=path).splitlines()
    assert [line.partition(":")[0] for line in lines] == [
        "kep", "colour", "unknown variable STATESYNC_KEPP (did you mean STATESYNC_KEEP?)", "log.level"]


def test_a_check_that_reads_a_bad_value_is_skipped_rather_than_reported_twice():
    assert config_error({"max_wait": "soon", "debounce": 2}) == "max_wait: expected a number, got 'soon'"


def test_each_setting_a_trigger_lacks_is_reported_naming_where_the_trigger_came_from():
    lines = config_error(env={"STATESYNC_GUARD_TRIGGER": "api"}).splitlines()
    assert lines == [f"guard.{name}: required when guard.trigger is api (guard.trigger from STATESYNC_GUARD_TRIGGER)"
                     for name in ("api_url", "api_user", "api_password_file")]


def test_a_settings_type_without_a_field_for_one_of_its_settings_fails_at_import():
    from statesync import schema
    fields = {s.name[len("guard."):]: str for s in config.SCHEMA if s.name.startswith("guard.")}
    del fields["confirmations"]
    with pytest.raises(TypeError, match=r"^Short lacks a field for guard.confirmations$"):
        schema.section("guard")(type("Short", (), {"__annotations__": fields}))


def test_a_settings_type_takes_its_defaults_from_the_schema_and_writes_none_of_its_own():
    from statesync import schema
    fields = {s.name[len("guard."):]: str for s in config.SCHEMA if s.name.startswith("guard.")}
    with pytest.raises(TypeError, match=r"trigger: its default is SCHEMA's \(guard.trigger\)"):
        schema.section("guard")(type("Own", (), {"__annotations__": fields, "trigger": "api"}))
