"""Consul's own variables mean what they mean to the consul CLI: CONSUL_CAPATH and
CONSUL_TLS_SERVER_NAME, their STATESYNC_CONSUL_* equivalents and settings, and what is refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from statesync.config import load
from statesync.consul.settings import Endpoint
from statesync.consul.transport import _capath_pem, tls_reason
from statesync.errors import ConfigError

NODE = {"node": "testnode"}


def cfg(flags=None, env=None, config_file=None):
    return load({**NODE, **(flags or {})}, {} if env is None else env, config_file)


def config_error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        cfg(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[str, str, str]:
    out = []
    for name in ("from-file", "from-consul-var", "from-statesync-var"):
        (tmp_path / name).mkdir()
        out.append(str(tmp_path / name))
    return tuple(out)


def test_consul_capath_and_tls_server_name_are_unset_by_default():
    c = cfg().consul
    assert (c.capath, c.tls_server_name) == ("", "")


def test_consul_capath_comes_from_the_file_then_consuls_variable_then_statesyncs_then_a_flag(tmp_path, dirs):
    from_file, from_consul, from_statesync = dirs
    path = tmp_path / "statesync.toml"
    path.write_text(f'[consul]\ncapath = "{from_file}"\n')
    assert cfg(config_file=str(path)).consul.capath == from_file
    assert cfg(env={"CONSUL_CAPATH": from_consul}, config_file=str(path)).consul.capath == from_consul
    env = {"CONSUL_CAPATH": from_consul, "STATESYNC_CONSUL_CAPATH": from_statesync}
    assert cfg(env=env, config_file=str(path)).consul.capath == from_statesync
    assert cfg({"consul.capath": from_file}, env=env).consul.capath == from_file


def test_consul_tls_server_name_comes_from_consuls_variable_unless_statesyncs_is_set():
    assert cfg(env={"CONSUL_TLS_SERVER_NAME": "server.dc1.consul"}).consul.tls_server_name == "server.dc1.consul"
    env = {"CONSUL_TLS_SERVER_NAME": "server.dc1.consul", "STATESYNC_CONSUL_TLS_SERVER_NAME": "consul.example.com"}
    assert cfg(env=env).consul.tls_server_name == "consul.example.com"
    assert cfg({"consul.tls_server_name": "10.0.0.7"}, env=env).consul.tls_server_name == "10.0.0.7"


@pytest.mark.parametrize("name", ["consul", "server.dc1.consul", "10.1.2.3", "::1", "consul-1.example.com."])
def test_a_tls_server_name_may_be_a_dns_name_or_an_ip_address(name):
    assert cfg(env={"CONSUL_TLS_SERVER_NAME": name}).consul.tls_server_name == name


@pytest.mark.parametrize("name", ["consul:8501", "https://consul", "two words", "-consul", "a/b"])
def test_a_tls_server_name_with_a_port_scheme_or_space_is_refused_naming_the_setting(name):
    assert config_error(env={"CONSUL_TLS_SERVER_NAME": name}).startswith("consul.tls_server_name: ")


def test_a_capath_that_is_no_directory_is_refused_in_one_line(tmp_path):
    (tmp_path / "file.pem").write_text("x")
    for path in (tmp_path / "missing", tmp_path / "file.pem"):
        assert config_error(env={"CONSUL_CAPATH": str(path)}) == f"consul.capath: directory {path} does not exist"


def test_a_unix_socket_address_is_refused_with_a_clear_line():
    message = config_error(env={"CONSUL_HTTP_ADDR": "unix:///var/run/consul.sock"})
    assert message.startswith("consul.addr: unix sockets (unix://) are not supported")


def test_consul_http_ssl_leaves_an_explicit_scheme_and_turns_a_bare_address_into_https():
    env = {"CONSUL_HTTP_SSL": "true", "CONSUL_HTTP_ADDR": "https://a,b:8501"}
    assert cfg(env=env).consul.endpoints == (Endpoint("https", "a", 8500), Endpoint("https", "b", 8501))


def test_the_token_file_wins_over_the_token_variable_as_with_the_consul_cli(tmp_path):
    (tmp_path / "token").write_text("from-the-file\n")
    env = {"CONSUL_HTTP_TOKEN": "from-the-variable", "CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "token")}
    assert cfg(env=env).consul.token == "from-the-file"


def test_capath_trusts_the_certificates_of_every_file_below_it(tmp_path):
    from .certs import make_ca
    (tmp_path / "sub").mkdir()
    first, second = make_ca("first"), make_ca("second")
    (tmp_path / "a.pem").write_bytes(first.pem)
    (tmp_path / "sub" / "b.crt").write_bytes(b"a comment\n" + second.pem)
    pem = _capath_pem(str(tmp_path))
    assert pem.count("BEGIN CERTIFICATE") == 2


def test_capath_refuses_a_file_that_holds_no_certificate_and_an_empty_directory(tmp_path):
    with pytest.raises(ValueError, match="holds no certificate file"):
        _capath_pem(str(tmp_path))
    (tmp_path / "notes.txt").write_text("not a certificate")
    with pytest.raises(ValueError, match=r"notes.txt holds no PEM certificate"):
        _capath_pem(str(tmp_path))


def test_a_certificate_for_another_name_is_explained_with_the_server_name_setting():
    reason = tls_reason(Exception("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, "
                                  "certificate is not valid for 'wrong.example'. (_ssl.c:1006)"))
    assert "CONSUL_TLS_SERVER_NAME" in reason and "\n" not in reason
