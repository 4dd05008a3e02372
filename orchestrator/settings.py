"""One settings module, configured from the environment (12-factor).

Without ``DATABASE_URL`` the checkout's embedded PostgreSQL is used (see
``orchestrator.core.embedded``); without ``CELERY_BROKER_URL`` the embedded Valkey
started by ``manage.py dev`` or the test suite. A bad value stops the process at
start with a message naming the variable.
"""

from __future__ import annotations

import os
import zoneinfo
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from orchestrator.core import env
from orchestrator.core.embedded import (
    data_dir,
    ensure_postgres,
    local_secret_key,
    running_valkey_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent

_database_url = env.get_url("DATABASE_URL", schemes=("postgres", "postgresql", "pgsql", "postgis"))
#: No DATABASE_URL means a local checkout on its embedded servers: a developer's machine.
EMBEDDED_DATABASE = _database_url is None

DEBUG = env.get_bool("DEBUG", default=EMBEDDED_DATABASE)

SECRET_KEY = env.get_str("SECRET_KEY")
if SECRET_KEY is None:
    if not EMBEDDED_DATABASE:
        raise ImproperlyConfigured("SECRET_KEY: must be set when DATABASE_URL is set")
    SECRET_KEY = local_secret_key()
if len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("SECRET_KEY: must be at least 32 characters")

ALLOWED_HOSTS = env.get_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
PUBLIC_BASE_URL = env.get_url("PUBLIC_BASE_URL", "http://localhost:8000", schemes=("http", "https"))
CSRF_TRUSTED_ORIGINS = env.get_list("CSRF_TRUSTED_ORIGINS", [PUBLIC_BASE_URL])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # swagger-ui and redoc served from our static files
    "django_celery_beat",
    "orchestrator.audience",
    "orchestrator.consent",
    "orchestrator.delivery",
    "orchestrator.segments",
    "orchestrator.api",
    "orchestrator.core",
    "orchestrator.ops",
    "orchestrator.preferences",
    "orchestrator.analytics",
    "orchestrator.privacy",
    "orchestrator.demo",
    "channels.devinbox",
    "channels.webhooks",
    "journeys",
    "orchestrator.broadcasts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Early: refuses oversize API bodies before they are read; JSON 404s for /api/.
    "orchestrator.api.middleware.ApiEdgeMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "orchestrator.urls"
WSGI_APPLICATION = "orchestrator.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
if _database_url:
    try:
        _default_db = dj_database_url.parse(_database_url)
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL: {exc}") from None
else:
    _pg = ensure_postgres()
    _default_db = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _pg.name,
        "USER": _pg.user,
        "HOST": _pg.socket_dir,
        "PORT": str(_pg.port),
    }
    EMBEDDED_DATABASE_URL = _pg.url
# Production keeps connections open (a new PostgreSQL connection per request costs more
# than the request); a health check before reuse replaces one the server dropped.
_default_db["CONN_MAX_AGE"] = env.get_int("DB_CONN_MAX_AGE", 0 if DEBUG else 600, minimum=0)
_default_db["CONN_HEALTH_CHECKS"] = True
# Concurrent test runs against one server each get their own test database.
_test_suffix = env.get_str("TEST_DB_SUFFIX", "")
_default_db["TEST"] = {"NAME": f"test_orchestrator{'_' + _test_suffix if _test_suffix else ''}"}
DATABASES = {"default": _default_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ja", "日本語")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
#: The zone whose calendar days journey analytics and channel health are counted in.
ANALYTICS_TIME_ZONE = env.get_str("ANALYTICS_TIME_ZONE", "UTC") or "UTC"
try:
    zoneinfo.ZoneInfo(ANALYTICS_TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
    raise ImproperlyConfigured(
        f"ANALYTICS_TIME_ZONE: {ANALYTICS_TIME_ZONE!r} is not a time zone"
    ) from exc

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every start when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Not the manifest storage: a missing collectstatic must not turn pages into 500s.
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True

DATA_UPLOAD_MAX_MEMORY_SIZE = env.get_int("API_MAX_BODY_BYTES", 1_048_576, minimum=1024)

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = PUBLIC_BASE_URL.startswith("https://")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- REST API ---------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["orchestrator.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["orchestrator.api.auth.HasScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "orchestrator.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Orchestrator API",
    "DESCRIPTION": "Customers, events, transactional sends, preferences and configuration as code.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The schema and docs are public: reading them must not need an API key.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # One name for the channel choices wherever a field uses them.
    "ENUM_NAME_OVERRIDES": {"ChannelEnum": "orchestrator.consent.models.Channel"},
    # The docs pages load swagger-ui and redoc from our own static files, not a CDN:
    # they work offline and no third party sees who reads the docs.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
API_BULK_LIMIT = 1000
IDEMPOTENCY_KEY_TTL_HOURS = env.get_int("IDEMPOTENCY_KEY_TTL_HOURS", 48, minimum=24)

# --- Celery -----------------------------------------------------------------------
CELERY_BROKER_URL = (
    env.get_url(
        "CELERY_BROKER_URL",
        schemes=("redis", "rediss", "valkey", "valkeys", "amqp", "amqps", "pyamqp", "memory"),
    )
    or running_valkey_url()
)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
DISPATCH_INTERVAL_SECONDS = env.get_int("DISPATCH_INTERVAL_SECONDS", 2, minimum=1)
DISPATCH_BATCH_SIZE = env.get_int("DISPATCH_BATCH_SIZE", 500, minimum=1)
#: Messages stamped "handed off" together just before their provider calls: a worker
#: killed mid-batch leaves at most this many "maybe sent".
DISPATCH_SEND_CHUNK_SIZE = env.get_int("DISPATCH_SEND_CHUNK_SIZE", 50, minimum=1)
#: Messages of at least this priority (transactional and journey sends are 5 by default,
#: broadcasts 1) also wake the lane worker (queue "lane"), which dispatches only them.
DISPATCH_LANE_PRIORITY = env.get_int("DISPATCH_LANE_PRIORITY", 5, minimum=0)
#: Tries before a transiently failing message is given up as failed.
DISPATCH_MAX_ATTEMPTS = env.get_int("DISPATCH_MAX_ATTEMPTS", 5, minimum=1)
DISPATCH_BACKOFF_BASE_SECONDS = env.get_int("DISPATCH_BACKOFF_BASE_SECONDS", 30, minimum=1)
DISPATCH_BACKOFF_MAX_SECONDS = env.get_int("DISPATCH_BACKOFF_MAX_SECONDS", 3600, minimum=1)
#: The longest a provider's Retry-After / X-RateLimit-Reset may hold a message.
DISPATCH_RETRY_AFTER_MAX_SECONDS = env.get_int(
    "DISPATCH_RETRY_AFTER_MAX_SECONDS", 6 * 3600, minimum=1
)
#: How long a "maybe sent" message waits for a provider report before it is settled as
#: failed / unknown_outcome (never resent).
DISPATCH_UNKNOWN_OUTCOME_WAIT_SECONDS = env.get_int(
    "DISPATCH_UNKNOWN_OUTCOME_WAIT_SECONDS", 900, minimum=60
)
# Beat runs only these sweepers, defined here in code.
CELERY_BEAT_SCHEDULE = {
    "dispatch-due-messages": {
        "task": "delivery.dispatch",
        "schedule": float(DISPATCH_INTERVAL_SECONDS),
        "options": {"expires": float(DISPATCH_INTERVAL_SECONDS) * 2},
    },
    # Digests due (a customer's daily or weekly time, a journey digest step's window).
    "build-due-digests": {
        "task": "sweeps.build_digests",
        "schedule": 30.0,
        "options": {"expires": 30.0},
    },
    "recover-stalled-sends": {
        "task": "sweeps.recover_stalled",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
    "process-webhook-events": {
        "task": "webhooks.process",
        "schedule": 10.0,
        "options": {"expires": 20.0},
    },
    "journeys-tick": {
        "task": "journeys.tick",
        "schedule": 5.0,
        "options": {"expires": 10.0},
    },
    "journeys-events": {
        "task": "journeys.events",
        "schedule": 5.0,
        "options": {"expires": 10.0},
    },
    # Date and segment-entry triggers (and recurring schedules' reconciliation).
    "journey-triggers": {
        "task": "sweeps.journey_triggers",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
    # Idempotent; "daily" reminders come from each journey's grace window.
    "journey-replenishment": {
        "task": "sweeps.replenishment",
        "schedule": 900.0,
        "options": {"expires": 900.0},
    },
    # Journey analytics and channel health read daily rollups kept by this sweep.
    "analytics-rollup": {
        "task": "sweeps.analytics_rollup",
        "schedule": 30.0,
        "options": {"expires": 30.0},
    },
    # The size-over-time chart of each saved segment: one row per segment and day.
    "segment-sizes": {
        "task": "sweeps.segment_sizes",
        "schedule": 86400.0,
        "options": {"expires": 3600.0},
    },
    # Materialises broadcasts when due and sends an A/B test's winner to the rest.
    "broadcasts-sweep": {
        "task": "sweeps.broadcasts",
        "schedule": 30.0,
        "options": {"expires": 30.0},
    },
    # Tops the outbox up with due broadcast copies as the dispatcher drains it.
    "broadcasts-expand": {
        "task": "sweeps.broadcasts_expand",
        "schedule": 5.0,
        "options": {"expires": 5.0},
    },
    "purge-idempotency-records": {
        "task": "sweeps.purge_idempotency_records",
        "schedule": 3600.0,
        "options": {"expires": 600.0},
    },
}

# --- Fatigue policy ---------------------------------------------------------------------
#: Quiet hours in each customer's own time zone, unless they set their own.
QUIET_HOURS_DEFAULT = env.get_time_range("QUIET_HOURS_DEFAULT", "21:00-08:00")

# --- Channels ---------------------------------------------------------------------
DEFAULT_FROM_EMAIL = env.get_str("DEFAULT_FROM_EMAIL", "Stride Running <hello@example.com>")
#: Seconds an adapter waits for a provider's answer before the outcome counts as unknown.
PROVIDER_TIMEOUT_SECONDS = env.get_int("PROVIDER_TIMEOUT_SECONDS", 10, minimum=1)

_default_adapter = env.get_str("CHANNEL_ADAPTER_DEFAULT", "devinbox")
_adapter_backends = {
    "devinbox": "channels.devinbox.adapter.DevInboxAdapter",
    "locmem": "channels.adapters.locmem.LocmemAdapter",
    "console": "channels.adapters.console.ConsoleAdapter",
    "null": "channels.adapters.null.NullAdapter",
}
#: Real providers, per channel.
_provider_backends = {
    "email": {"sendgrid": "channels.adapters.sendgrid.SendGridAdapter"},
    "sms": {"twilio": "channels.adapters.twilio_sms.TwilioSmsAdapter"},
    "whatsapp": {"twilio": "channels.adapters.twilio_whatsapp.TwilioWhatsAppAdapter"},
    "line": {"line": "channels.adapters.line.LineAdapter"},
}
if _default_adapter not in _adapter_backends:
    raise ImproperlyConfigured(
        f"CHANNEL_ADAPTER_DEFAULT: expected one of {', '.join(_adapter_backends)}, "
        f"got {_default_adapter!r}"
    )


#: The public origin providers call (e.g. https://messaging.example.com), when a proxy
#: stands between them and us; Twilio signs the exact URL it called.
WEBHOOK_BASE_URL = env.get_url("WEBHOOK_BASE_URL", schemes=("http", "https"))
#: Where Twilio posts delivery reports: set only when a public address is configured
#: (a default of localhost would have Twilio call nowhere).
_callback_base = WEBHOOK_BASE_URL or env.get_url("PUBLIC_BASE_URL", schemes=("http", "https"))


def _required(name: str, why: str) -> str:
    value = env.get_str(name)
    if value is None:
        raise ImproperlyConfigured(f"{name}: required {why}")
    return value


def _provider_options(channel: str, provider: str) -> dict:
    variable = f"CHANNEL_ADAPTER_{channel.upper()}"
    common = {"timeout": PROVIDER_TIMEOUT_SECONDS}
    if provider == "sendgrid":
        return common | {
            "api_key": _required("SENDGRID_API_KEY", f"when {variable}=sendgrid"),
            "from_email": DEFAULT_FROM_EMAIL,
            "base_url": env.get_url("SENDGRID_BASE_URL", schemes=("http", "https")),
        }
    if provider == "twilio":
        # WhatsApp has its own sender (or Messaging Service); SMS uses the plain ones.
        prefix = "TWILIO_WHATSAPP_" if channel == "whatsapp" else "TWILIO_"
        options = common | {
            "account_sid": _required("TWILIO_ACCOUNT_SID", f"when {variable}=twilio"),
            "auth_token": _required("TWILIO_AUTH_TOKEN", f"when {variable}=twilio"),
            "from_number": env.get_str(f"{prefix}FROM_NUMBER"),
            "messaging_service_sid": env.get_str(f"{prefix}MESSAGING_SERVICE_SID"),
            "base_url": env.get_url("TWILIO_BASE_URL", schemes=("http", "https")),
        }
        if bool(options["from_number"]) == bool(options["messaging_service_sid"]):
            raise ImproperlyConfigured(
                f"{prefix}FROM_NUMBER or {prefix}MESSAGING_SERVICE_SID: exactly one is "
                f"required when {variable}=twilio"
            )
        if _callback_base:
            options["status_callback"] = f"{_callback_base}/webhooks/twilio/status/"
        return options
    if provider == "line":
        return common | {
            "channel_access_token": _required("LINE_CHANNEL_ACCESS_TOKEN", f"when {variable}=line"),
            "base_url": env.get_url("LINE_BASE_URL", schemes=("http", "https")),
        }
    return {}


#: Where per-sender send rates are counted across workers (Redis protocol). Unset:
#: the broker when it is Redis/Valkey; empty: each process counts its own.
RATE_LIMIT_URL = os.environ.get("RATE_LIMIT_URL")
if RATE_LIMIT_URL is not None and RATE_LIMIT_URL.strip():
    RATE_LIMIT_URL = env.get_url(
        "RATE_LIMIT_URL", schemes=("redis", "rediss", "valkey", "valkeys", "unix")
    )
elif RATE_LIMIT_URL is not None:
    RATE_LIMIT_URL = ""


def _rate_options(channel: str) -> dict:
    """``RATE_LIMIT_<CHANNEL>``: messages per second for the channel's sender, all workers."""
    name = f"RATE_LIMIT_{channel.upper()}"
    value = env.get_str(name)
    if value is None:
        return {}
    try:
        rate = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected messages per second, got {value!r}") from None
    if not 0 < rate < 1_000_000:
        raise ImproperlyConfigured(f"{name}: must be above 0, got {value!r}")
    return {"rate_per_second": rate}


def _channel_adapter(channel: str) -> dict:
    """``CHANNEL_ADAPTER_<CHANNEL>`` picks a real provider or a development adapter."""
    variable = f"CHANNEL_ADAPTER_{channel.upper()}"
    name = env.get_str(variable, _default_adapter)
    choices = _adapter_backends | _provider_backends[channel]
    if name not in choices:
        raise ImproperlyConfigured(
            f"{variable}: expected one of {', '.join(choices)}, got {name!r}"
        )
    options = _provider_options(channel, name) | _rate_options(channel)
    return {"BACKEND": choices[name], "OPTIONS": options}


CHANNEL_ADAPTERS = {
    channel: _channel_adapter(channel) for channel in ("email", "sms", "whatsapp", "line")
}
BRAND_NAME = env.get_str("BRAND_NAME", "Stride Running")

# --- Preference center --------------------------------------------------------------
#: How long a preference link in a message keeps working.
PREFERENCE_LINK_MAX_AGE_DAYS = env.get_int("PREFERENCE_LINK_MAX_AGE_DAYS", 90, minimum=1)
#: Requests a minute from one IP address to the preference center (counted in the
#: default cache: per process unless CACHES points at a shared cache).
PREFERENCE_CENTER_RATE_LIMIT = (
    env.get_int("PREFERENCE_CENTER_REQUESTS_PER_MINUTE", 60, minimum=1),
    60,
)
#: The page's accent colour (a CSS colour), with the brand's name above.
BRAND_COLOR = env.get_str("BRAND_COLOR", "#0f766e")
#: Older signing keys still accepted (key rotation), comma-separated.
SECRET_KEY_FALLBACKS = env.get_list("SECRET_KEY_FALLBACKS", [])

# --- Webhooks -------------------------------------------------------------------
#: Twilio status callbacks and inbound messages are signed with the account's auth token.
TWILIO_AUTH_TOKEN = env.get_str("TWILIO_AUTH_TOKEN", "") or ""
#: SendGrid's Event Webhook verification key (Settings > Mail Settings), base64 DER.
SENDGRID_WEBHOOK_PUBLIC_KEY = env.get_str("SENDGRID_WEBHOOK_PUBLIC_KEY", "") or ""
#: A signed SendGrid request older (or newer) than this many seconds is refused.
SENDGRID_WEBHOOK_MAX_AGE_SECONDS = env.get_int("SENDGRID_WEBHOOK_MAX_AGE_SECONDS", 300, minimum=1)
#: LINE webhooks are signed with the channel secret.
LINE_CHANNEL_SECRET = env.get_str("LINE_CHANNEL_SECRET", "") or ""
#: Answer STOP, START and HELP with one confirmation. Turn off where the provider
#: already answers them itself (Twilio Advanced Opt-Out on a Messaging Service).
KEYWORD_CONFIRMATIONS = env.get_bool("KEYWORD_CONFIRMATIONS", True)

ORCHESTRATOR_DATA_DIR = data_dir()

# LOG_FORMAT=json in production: one JSON object per line. Either way emails and phone
# numbers are masked (orchestrator.core.logging).
LOG_FORMAT = env.get_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT: expected plain or json, got {LOG_FORMAT!r}")
LOG_LEVEL = (env.get_str("LOG_LEVEL", "INFO") or "INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(
        f"LOG_LEVEL: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"mask_personal_data": {"()": "orchestrator.core.logging.MaskPersonalData"}},
    "formatters": {
        "plain": {
            "()": "orchestrator.core.logging.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        },
        "json": {"()": "orchestrator.core.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["mask_personal_data"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # The Twilio SDK logs every request and response at INFO.
        "twilio.http_client": {"level": "WARNING"},
    },
}
# Celery's worker and beat would otherwise replace these handlers with their own
# (unmasked, never JSON); ``--loglevel`` still sets the level there.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# /metrics asks for "Authorization: Bearer <METRICS_TOKEN>" when set; open when unset.
METRICS_TOKEN = env.get_str("METRICS_TOKEN", "") or ""
