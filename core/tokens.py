"""API tokens: trade a username and password for a token (knox keeps only its hash), and revoke it."""

from drf_spectacular.utils import extend_schema, inline_serializer
from knox import views as knox_views
from rest_framework import serializers, status
from rest_framework.authentication import BasicAuthentication

from core.api import ErrorSerializer
from core.audit import audit
from core.web import request_source


TokenSerializer = inline_serializer("Token", {
    "token": serializers.CharField(help_text="Shown once; send it as 'Authorization: Token <token>'"),
    "expiry": serializers.DateTimeField(allow_null=True),
})


class LoginView(knox_views.LoginView):
    """Trade a username and password (HTTP Basic) for an API token, shown once; knox keeps only its hash."""

    authentication_classes = [BasicAuthentication]

    @extend_schema(request=None, responses={200: TokenSerializer, 401: ErrorSerializer})
    def post(self, request, format=None):
        """Create a token for the authenticated user."""
        response = super().post(request, format)
        if response.status_code == status.HTTP_200_OK:
            audit(request.user.username, "token.create", "user", request.user.username,
                           request_source(request), via="api")
        return response


class LogoutView(knox_views.LogoutView):
    """Revoke the token the request was made with."""

    @extend_schema(request=None, responses={204: None, 401: ErrorSerializer})
    def post(self, request, format=None):
        """Delete the token used for this request."""
        response = super().post(request, format)
        audit(request.user.username, "token.revoke", "user", request.user.username,
                       request_source(request), via="api")
        return response
