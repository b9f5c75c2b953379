from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from config.api import api

admin.site.site_header = "Tollgate back-office"
admin.site.site_title = "Tollgate"
admin.site.index_title = "Billing operations"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="portal:dashboard", permanent=False)),
    path("admin/", admin.site.urls),
    path("portal/", include("config.portal_urls")),
    path("api/v1/", api.urls),
    path("i18n/", include("django.conf.urls.i18n")),
]
