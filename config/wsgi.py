import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

application = get_wsgi_application()

# Load the URLconf (views, the API and its schemas) now rather than at the first request,
# then move everything loaded out of the garbage collector's view. Full collections, which a
# busy usage API triggers every few seconds, would otherwise walk those ~140,000 objects each
# time: ~4 % of a usage batch's CPU (bench/usage_api.py). Frozen objects are still freed by
# reference counting; only cycles among them are kept (startup objects live on anyway).
get_resolver().url_patterns  # noqa: B018 (imports the URLconf)
gc.collect()
gc.freeze()
