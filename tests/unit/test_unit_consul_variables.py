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


@pytest.mark.parametrize("given,name", [("consul.example.com:8501", "consul.example.com"), ("[::1]:8501", "::1"),
                                        ("[2001:db8::7]", "2001:db8::7"), ("10.0.0.7:8501", "10.0.0.7")])
def test_a_tls_server_name_with_a_port_drops_the_port_as_the_consul_cli_does(given, name):
    assert cfg(env={"CONSUL_TLS_SERVER_NAME": given}).consul.tls_server_name == name


@pytest.mark.parametrize("name", ["consul:port", "https://consul", "two words", "-consul", "a/b"])
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
    from ..certs import make_ca
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


# --- what the consul CLI reads and statesync must not get wrong: credentials, auth, namespaces ---

SECRET = "s3cr3t,pa/ss://w0rd"


@pytest.mark.parametrize("addr", [f"user:{SECRET}@127.0.0.1:8500", f"http://user:{SECRET}@consul:8500",
                                  f"https://user:{SECRET}@[::1]:8501/consul", f"127.0.0.1:1,user:{SECRET}@b:2"])
def test_credentials_in_the_address_are_refused_in_one_line_that_shows_no_part_of_the_password(addr):
    message = config_error(env={"CONSUL_HTTP_ADDR": addr})
    assert message.startswith("consul.addr: credentials in the address (") and "CONSUL_HTTP_AUTH" in message
    assert not any(piece in message for piece in ("s3cr3t", "pa/ss", "w0rd", "user"))


@pytest.mark.parametrize("addr", ["a:b:c", "consul:8500:1", "user:pw:host"])
def test_a_bare_address_with_several_colons_that_is_no_ipv6_address_is_refused(addr):
    assert "is not host[:port]" in config_error(env={"CONSUL_HTTP_ADDR": addr})


@pytest.mark.parametrize("addr,endpoint", [
    ("http://proxy:8080/consul", Endpoint("http", "proxy", 8080, "/consul")),
    ("https://proxy/api/consul/", Endpoint("https", "proxy", 8500, "/api/consul")),
    ("http://[::1]:8080/consul", Endpoint("http", "::1", 8080, "/consul")),
])
def test_a_path_after_the_scheme_is_the_prefix_a_reverse_proxy_serves_consul_under(addr, endpoint):
    (got,) = cfg(env={"CONSUL_HTTP_ADDR": addr}).consul.endpoints
    assert got == endpoint and str(got) == f"{endpoint.scheme}://{endpoint.url_host}:{endpoint.port}{endpoint.path}"


@pytest.mark.parametrize("addr", ["proxy:8080/consul", "http://proxy/a?b", "http://proxy/a%2fb", "http://proxy/a b"])
def test_a_path_without_a_scheme_or_with_a_query_or_escape_is_refused(addr):
    assert config_error(env={"CONSUL_HTTP_ADDR": addr}).startswith("consul.addr: ")


def test_consul_http_auth_is_user_and_password_and_never_shown():
    c = cfg(env={"CONSUL_HTTP_AUTH": f"user:{SECRET}"})
    assert c.consul.auth == f"user:{SECRET}"
    assert SECRET not in repr(c) and SECRET not in repr(c.consul)
    assert cfg().consul.auth == ""


def test_the_auth_file_wins_over_consul_http_auth_as_the_token_file_wins_over_the_token(tmp_path):
    (tmp_path / "auth").write_text("proxy-user:from-the-file\n")
    env = {"CONSUL_HTTP_AUTH": "user:from-the-variable", "STATESYNC_CONSUL_AUTH_FILE": str(tmp_path / "auth")}
    assert cfg(env=env).consul.auth == "proxy-user:from-the-file"
    path = tmp_path / "statesync.toml"
    path.write_text(f'[consul]\nauth_file = "{tmp_path / "auth"}"\n')
    assert cfg(config_file=str(path)).consul.auth == "proxy-user:from-the-file"


def test_an_auth_file_of_two_lines_is_refused_without_showing_them(tmp_path):
    (tmp_path / "auth").write_text(f"user:{SECRET}\nsecond line\n")
    message = config_error(env={"STATESYNC_CONSUL_AUTH_FILE": str(tmp_path / "auth")})
    assert message.startswith("consul.auth_file: ") and SECRET not in message and "second" not in message


@pytest.mark.parametrize("var", ["CONSUL_NAMESPACE", "CONSUL_PARTITION"])
def test_a_consul_enterprise_namespace_or_partition_is_refused_in_one_line_but_default_is_no_change(var):
    assert config_error(env={var: "team-a"}).startswith(f"{var}: ")
    assert cfg(env={var: "default"}).consul == cfg(env={var: ""}).consul == cfg().consul


@pytest.mark.parametrize("auth,sent", [("user:pa:ss", b"user:pa:ss"), ("user", b"user:"), ("", None)])
def test_basic_auth_goes_in_one_authorization_header_as_the_consul_cli_sends_it(auth, sent):
    import base64

    from statesync.consul.settings import ConsulSettings
    from statesync.consul.transport import KeepAliveTransport, Stats
    headers = KeepAliveTransport(ConsulSettings(auth=auth), Stats())._headers
    expected = None if sent is None else "Basic " + base64.b64encode(sent).decode()
    assert headers.get("Authorization") == expected
