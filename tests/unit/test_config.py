"""Settings from the environment: defaults, roles, and errors naming the variable."""
import pytest

from app.config import ROLE_DEPENDENT, ROLE_PRIMARY, ROLE_STANDALONE, ConfigError, load_settings


def test_it_defaults_to_a_standalone_on_the_seed_ports(tmp_path):
    settings = load_settings({"DATA_DIR": str(tmp_path)})
    assert settings.role == ROLE_STANDALONE
    assert (settings.port, settings.sync_api_port) == (3001, 3002)
    assert settings.database_url == f"sqlite:///{tmp_path.resolve()}/monitor.db"
    assert settings.embedded_redis


def test_it_detects_primary_and_dependent():
    assert load_settings({"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": "s" * 16}).role == ROLE_PRIMARY
    dependent = load_settings({"PRIMARY_SYNC_URL": "https://primary.example.org:3002/", "SYNC_SHARED_SECRET": "s" * 16})
    assert dependent.role == ROLE_DEPENDENT
    assert dependent.primary_sync_url == "https://primary.example.org:3002"


def test_it_refuses_both_roles_at_once():
    with pytest.raises(ConfigError, match="ENABLE_SYNC_API and PRIMARY_SYNC_URL"):
        load_settings({"ENABLE_SYNC_API": "true", "PRIMARY_SYNC_URL": "http://127.0.0.1:3002"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SYNC_INTERVAL", "soon", "SYNC_INTERVAL must be an integer"),
        ("HEARTBEAT_INTERVAL", "0", "HEARTBEAT_INTERVAL must be at least 1"),
        ("PORT", "70000", "PORT must be at most 65535"),
        ("SYNC_API_PORT", "3001", "SYNC_API_PORT must differ from PORT"),
        ("PRIMARY_SYNC_URL", "primary:3002", "PRIMARY_SYNC_URL must start with"),
        ("PUBLIC_SYNC_URL", "ftp://x", "PUBLIC_SYNC_URL must start with"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL must start with"),
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL must be a sqlite:// or postgresql://"),
        ("ENABLE_SYNC_API", "maybe", "ENABLE_SYNC_API must be true or false"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be"),
        ("CONNECTION_TIMEOUT", "1.5", "CONNECTION_TIMEOUT must be an integer"),
    ],
)
def test_it_names_the_bad_variable(name, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({name: value})


def test_it_rewrites_paas_postgres_urls():
    settings = load_settings({"DATABASE_URL": "postgres://u:p@db:5432/monitor"})
    assert settings.database_url == "postgresql://u:p@db:5432/monitor"


def test_it_uses_database_path_for_sqlite(tmp_path):
    settings = load_settings({"DATABASE_PATH": str(tmp_path / "x.db")})
    assert settings.database_url == f"sqlite:///{tmp_path / 'x.db'}"


def test_it_requires_a_join_secret_for_a_cluster_role():
    with pytest.raises(ConfigError, match="SYNC_SHARED_SECRET must be set on a primary"):
        load_settings({"ENABLE_SYNC_API": "true"})
    with pytest.raises(ConfigError, match="SYNC_SHARED_SECRET must be at least 16"):
        load_settings({"PRIMARY_SYNC_URL": "http://127.0.0.1:3002", "SYNC_SHARED_SECRET": "short"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RESULT_RETENTION_DAYS", "1000000", "RESULT_RETENTION_DAYS must be at most 3650"),
        ("RESULT_RETENTION_DAYS", "a week", "RESULT_RETENTION_DAYS must be an integer"),
        ("HOURLY_RETENTION_DAYS", "7", "HOURLY_RETENTION_DAYS must be at least 31"),
        ("DAILY_RETENTION_DAYS", "30", "DAILY_RETENTION_DAYS must be at least 91"),
        ("DELIVERY_RETENTION_DAYS", "0", "DELIVERY_RETENTION_DAYS must be at least 1"),
        ("FAILOVER_ORDER", "99999999999999999999", "FAILOVER_ORDER must be at most 10000"),
        ("SECRET_KEY", "short", "SECRET_KEY must be at least 16 characters"),
        ("HOST", "http://0.0.0.0", "HOST must be an address"),
        ("HOST", "0.0.0.0 :80", "HOST must be an address"),
    ],
)
def test_it_bounds_values_that_would_break_later(name, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({name: value})


def test_retention_defaults_to_a_week_of_results_90_days_of_hours_and_2_years_of_days():
    settings = load_settings({})
    assert (settings.result_retention_days, settings.hourly_retention_days, settings.daily_retention_days) == \
           (7, 90, 730)


def test_it_accepts_ipv6_and_host_names_for_host():
    assert load_settings({"HOST": "::"}).host == "::"
    assert load_settings({"HOST": "[::1]"}).host == "[::1]"
    assert load_settings({"HOST": "monitor.internal"}).host == "monitor.internal"


def test_it_trusts_proxy_headers_only_when_told(tmp_path):
    from app import create_app

    def client_ip(env):
        app = create_app({"TESTING": True}, serve="none",
                         settings=load_settings({"DATA_DIR": str(tmp_path), **env}))

        @app.get("/ip")
        def ip():
            from flask import request

            return request.remote_addr

        return app.test_client().get("/ip", headers={"X-Forwarded-For": "203.0.113.9"},
                                     environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_data(as_text=True)

    assert client_ip({}) == "127.0.0.1"
    assert client_ip({"TRUSTED_PROXIES": "1"}) == "203.0.113.9"


def test_it_reads_the_instance_coordinates_in_decimal_degrees():
    assert load_settings({}).instance_coordinates is None
    settings = load_settings({"INSTANCE_LATITUDE": " 50.11 ", "INSTANCE_LONGITUDE": "-8.682"})
    assert settings.instance_coordinates == (50.11, -8.682)
    assert load_settings({"INSTANCE_LATITUDE": "-90", "INSTANCE_LONGITUDE": "+180"}).instance_coordinates == (-90, 180)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INSTANCE_LATITUDE": "91", "INSTANCE_LONGITUDE": "0"}, "INSTANCE_LATITUDE must be decimal degrees from -90 to 90"),
        ({"INSTANCE_LATITUDE": "0", "INSTANCE_LONGITUDE": "-180.5"}, "INSTANCE_LONGITUDE must be decimal degrees from -180"),
        ({"INSTANCE_LATITUDE": "nan", "INSTANCE_LONGITUDE": "0"}, "INSTANCE_LATITUDE must be decimal degrees"),
        ({"INSTANCE_LATITUDE": "1_0", "INSTANCE_LONGITUDE": "0"}, "INSTANCE_LATITUDE must be decimal degrees"),
        ({"INSTANCE_LATITUDE": "50.1N", "INSTANCE_LONGITUDE": "8.6E"}, "INSTANCE_LATITUDE must be decimal degrees"),
        ({"INSTANCE_LATITUDE": "50.1"}, "INSTANCE_LATITUDE is set but INSTANCE_LONGITUDE is not"),
        ({"INSTANCE_LONGITUDE": "8.6", "INSTANCE_LATITUDE": " "}, "INSTANCE_LONGITUDE is set but INSTANCE_LATITUDE is not"),
    ],
)
def test_it_refuses_coordinates_that_place_nothing(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)
