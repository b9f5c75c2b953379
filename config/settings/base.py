"""Settings shared by every environment.

Everything that differs between machines is read from the environment through
django-environ; the defaults here need no server at all (SQLite and a filesystem
Celery broker), so a fresh checkout runs with no configuration.
"""

from pathlib import Path

import environ
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Local state of the embedded defaults (SQLite file, filesystem broker queues).
VAR_DIR = Path(env("TOLLGATE_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = env("DJANGO_SECRET_KEY", default="insecure-local-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "djmoney",
    "django_celery_beat",
    "ninja",
    "accounts",
    "billing",
    "vouchers",
    "invoicing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.portal",
            ],
        },
    },
]

# SQLite in var/ unless DATABASE_URL names another database (postgres://...).
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'tollgate.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Keep connections between requests (a new PostgreSQL connection costs milliseconds on
# every API call); checked before reuse so a restarted server is not an error.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Writers wait for each other instead of failing at once with "database is locked";
    # the web server, the worker and beat all write to the one file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The cache every web and worker process shares (the voucher brute-force counters live
# here). Redis when CACHE_URL (or REDIS_URL) names one, e.g. redis://127.0.0.1:6379/1; else
# the embedded default, a table in the database (`manage.py createcachetable`, run by
# `make setup`), which all processes share as they share the database. Any django-environ
# cache URL works (dbcache://TABLE, locmemcache://, ...).
CACHES = {
    "default": env.cache_url(
        "CACHE_URL", default=env("REDIS_URL", default="dbcache://tollgate_cache")
    )
}
CACHES["default"].setdefault("KEY_PREFIX", "tollgate")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:dashboard"
LOGOUT_REDIRECT_URL = "portal:login"

# Internationalisation: English and Japanese from the start.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ja", _("Japanese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
USE_TZ = True
# The server's own zone; billing periods use each company's billing time zone instead.
TIME_ZONE = "UTC"

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)

# Money: JPY by default; the currencies a company may be billed in.
DEFAULT_CURRENCY = "JPY"
CURRENCIES = ("JPY", "USD", "EUR", "GBP", "AUD", "SGD")
CURRENCY_CHOICES = [(code, code) for code in CURRENCIES]

# Celery: a filesystem broker under var/ needs no server; CELERY_BROKER_URL switches
# to Redis (redis://...) or RabbitMQ (amqp://...).
# (The host is ignored; named, kombu does not warn that it assumed one.)
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://localhost/")
# Redis redelivers a message a worker took but never acknowledged (it died) after this.
# Its sweep for such messages runs every interval × throttle seconds (kombu: 10 × 10).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
    "unacked_restore_throttle": env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=10),
}
if CELERY_BROKER_URL.startswith("filesystem"):
    (VAR_DIR / "broker").mkdir(exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(VAR_DIR / "broker"),
        "data_folder_out": str(VAR_DIR / "broker"),
        # Broadcast (remote control) messages; otherwise kombu writes into the cwd.
        "control_folder": str(VAR_DIR / "broker-control"),
        "store_processed": False,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Celery's Django fixup closes every database connection before and after each task (a new
# PostgreSQL connection costs milliseconds) unless told to reuse them; config/celery.py
# closes the unusable or obsolete ones around each task instead, as Django does around a
# request (CONN_MAX_AGE, CONN_HEALTH_CHECKS, errors).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)

# Without a mail server, emails are written as .eml files into var/mail/, one per message:
# statement emails carry a PDF, which would fill the terminal of ``make run``.
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = env("EMAIL_FILE_PATH", default=str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="billing@tollgate.localhost")

# The operator whose name and address appear on the portal and on documents.
OPERATOR_NAME = env("TOLLGATE_OPERATOR_NAME", default="Tollgate Communications")
# On statements and receipts: the postal address (lines separated by "\n") and the tax
# registration number (e.g. a Japanese qualified invoice issuer number, T + 13 digits).
TOLLGATE_OPERATOR_ADDRESS = env("TOLLGATE_OPERATOR_ADDRESS", default="").replace("\\n", "\n")
TOLLGATE_OPERATOR_REGISTRATION = env("TOLLGATE_OPERATOR_REGISTRATION", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # WeasyPrint logs seven INFO lines of progress for every PDF.
    "loggers": {"weasyprint.progress": {"level": "WARNING"}},
}

# How long granted credits last by source, in days (vouchers carry their own lifetime).
TOLLGATE_CREDIT_LIFETIME_DAYS = {
    "purchase": env.int("TOLLGATE_PURCHASE_CREDIT_DAYS", default=90),
    "trial": env.int("TOLLGATE_TRIAL_CREDIT_DAYS", default=30),
    "grant": env.int("TOLLGATE_GRANT_CREDIT_DAYS", default=90),
    "voucher": 90,
    "adjustment": env.int("TOLLGATE_ADJUSTMENT_CREDIT_DAYS", default=365),
}

# Recurring charges: companies charged in one database transaction, and so in one task of
# the fan-out. Their rows stay locked until it commits (a fraction of a second).
TOLLGATE_RECURRING_BATCH = env.int("TOLLGATE_RECURRING_BATCH", default=100)

# Vouchers: refused redemption attempts allowed per hour in each scope (the user, the
# company, the client IP) before attempts are locked for VOUCHER_LOCK_SECONDS.
VOUCHER_FAILURES_PER_HOUR = env.int("VOUCHER_FAILURES_PER_HOUR", default=10)
VOUCHER_FAILURE_LIMITS = dict.fromkeys(("user", "company", "ip"), VOUCHER_FAILURES_PER_HOUR)
VOUCHER_FAILURE_WINDOW_SECONDS = 3600
VOUCHER_LOCK_SECONDS = env.int("VOUCHER_LOCK_SECONDS", default=3600)
VOUCHER_RATELIMIT_CACHE = "default"
# Reverse proxies in front of the web server that append to X-Forwarded-For (0: clients
# connect directly and REMOTE_ADDR is theirs). Decides which address is rate-limited.
TOLLGATE_PROXY_COUNT = env.int("TOLLGATE_PROXY_COUNT", default=0)

# Overdue invoices (invoicing.dunning). Reminders go to the billing contacts this many days
# after an invoice's due date (each once per invoice; a run that missed days sends only the
# latest one due); from BLOCK_AFTER_DAYS after the due date, a company with the invoice still
# open is blocked (reason: overdue) until it pays. Days count in the company's time zone.
TOLLGATE_OVERDUE_REMINDER_DAYS = sorted(
    {int(day) for day in env.list("TOLLGATE_OVERDUE_REMINDER_DAYS", default=["1", "7", "14"])}
)
TOLLGATE_OVERDUE_BLOCK_AFTER_DAYS = env.int("TOLLGATE_OVERDUE_BLOCK_AFTER_DAYS", default=21)
# How many days before a credit lot expires its company's billing contacts are told of the
# credit left in it (``invoicing.expiry_notices``).
TOLLGATE_EXPIRY_NOTICE_DAYS = env.int("TOLLGATE_EXPIRY_NOTICE_DAYS", default=7)
# Companies checked in one database transaction (their rows locked until it commits).
TOLLGATE_DUNNING_BATCH = env.int("TOLLGATE_DUNNING_BATCH", default=200)
# In statement and reminder emails: how to pay by bank transfer (account details, lines
# separated by "\n"), and the site's address (e.g. https://billing.example.com) for a link
# to the statement in the portal (empty: no link).
TOLLGATE_BANK_TRANSFER_DETAILS = env("TOLLGATE_BANK_TRANSFER_DETAILS", default="").replace(
    "\\n", "\n"
)
TOLLGATE_SITE_URL = env("TOLLGATE_SITE_URL", default="").rstrip("/")
# Load WeasyPrint and the PDF fonts when a Celery worker process starts (~0.5 s), so the
# first statement PDF a worker renders is as quick as the next ones.
TOLLGATE_PDF_WARM_UP = env.bool("TOLLGATE_PDF_WARM_UP", default=True)
