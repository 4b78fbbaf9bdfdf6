"""Create, list and revoke API tokens for scripts.

The token is printed once by 'create'; knox keeps only its hash, so a lost
token is revoked and replaced, never recovered. Exit codes: 0 ok, 2 usage,
3 unknown user or token.
"""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone
from knox.models import get_token_model


from covet.errors import NotFoundError, UsageError
from core.commands import CovetCommand
from core.audit import audit, cli_source


class Command(CovetCommand):
    help = ("API tokens: 'api_token create --user NAME [--expiry-days N]' prints a new token once; "
            "'api_token list [--user NAME]'; 'api_token revoke KEY' (the key shown by list) or --user NAME --all.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a token and print it once")
        create.add_argument("--user", required=True, help="the user the token acts as")
        create.add_argument("--expiry-days", type=int, help="days until it expires (default: never)")
        listing = sub.add_parser("list", help="list tokens (their public key prefix, never the token)")
        listing.add_argument("--user")
        revoke = sub.add_parser("revoke", help="revoke a token by the key 'list' shows, or all of a user's")
        revoke.add_argument("key", nargs="?")
        revoke.add_argument("--user")
        revoke.add_argument("--all", action="store_true", help="with --user: revoke all of that user's tokens")

    def handle(self, *args, **opts):
        getattr(self, f"_{opts['action']}")(opts)

    def _user(self, username: str):
        try:
            return get_user_model().objects.get_by_natural_key(username)
        except get_user_model().DoesNotExist:
            raise NotFoundError(f"no user named {username!r}; create one with 'manage.py createsuperuser'") from None

    def _create(self, opts) -> None:
        user = self._user(opts["user"])
        days = opts["expiry_days"]
        if days is not None and days < 1:
            raise UsageError("--expiry-days must be at least 1")
        instance, token = get_token_model().objects.create(user, expiry=timedelta(days=days) if days else None)
        source = cli_source()
        audit(source, "token.create", "user", user.get_username(), source, key=instance.token_key,
                       via="cli")
        expires = f"expires {instance.expiry:%Y-%m-%d %H:%M} UTC" if instance.expiry else "never expires"
        self.stderr.write(f"token {instance.token_key} for {user.get_username()} ({expires}); "
                          "it is shown only now — store it safely:")
        self.stdout.write(token)

    def _list(self, opts) -> None:
        tokens = get_token_model().objects.select_related("user").order_by("created")
        if opts["user"]:
            tokens = tokens.filter(user=self._user(opts["user"]))
        now = timezone.now()
        for token in tokens:
            expiry = f"{token.expiry:%Y-%m-%d %H:%M}" if token.expiry else "never"
            state = " (expired)" if token.expiry and token.expiry <= now else ""
            self.stdout.write(f"{token.token_key:<16} {token.user.get_username():<20} "
                              f"created {token.created:%Y-%m-%d %H:%M}  expires {expiry}{state}")

    def _revoke(self, opts) -> None:
        tokens = get_token_model().objects.all()
        if opts["key"]:
            tokens = tokens.filter(token_key=opts["key"])
            if opts["user"]:
                tokens = tokens.filter(user=self._user(opts["user"]))
        elif opts["user"] and opts["all"]:
            tokens = tokens.filter(user=self._user(opts["user"]))
        else:
            raise UsageError("say which token: 'api_token revoke KEY' or 'api_token revoke --user NAME --all'")
        count, _ = tokens.delete()
        if not count:
            which = f"with key {opts['key']!r}" if opts["key"] else f"of user {opts['user']!r}"
            raise NotFoundError(f"no token {which}; 'manage.py api_token list' shows them")
        source = cli_source()
        audit(source, "token.revoke", "user", opts["user"] or "", source, key=opts["key"] or "all",
                       count=count)
        self.stdout.write(f"{count} token(s) revoked")
