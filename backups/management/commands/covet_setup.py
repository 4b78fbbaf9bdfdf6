"""First-run set-up: default storage, default key file and the admin account. Safe to run again."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from backups.services import keys
from core.commands import CovetCommand
from backups.services.storages import default_storage


class Command(CovetCommand):
    help = ("Create the default local storage, the default key file (when no key is configured) and the admin "
            "account (password from COVET_ADMIN_PASSWORD, or generated into a 0600 file whose path is printed).")

    def handle(self, *args, **opts):
        storage = default_storage()
        self.stdout.write(f"storage: {storage.name} ({storage.kind}) {storage.config}")
        self._key()
        self._admin()

    def _key(self) -> None:
        if keys.env_key_ref():
            self.stdout.write("key: using the key named by COVET_KEY_FILE / COVET_PASSPHRASE_FILE")
            return
        path, created = keys.ensure_default_key_file()
        if created:
            self.stdout.write(self.style.WARNING(
                f"key: created the default key file {path} (mode 0600).\n"
                "     Keep a copy of it somewhere else NOW: without it no backup made with it can be restored."))
        else:
            self.stdout.write(f"key: default key file {path}")

    def _admin(self) -> None:
        User = get_user_model()
        username = os.environ.get("COVET_ADMIN_USER", "admin")
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"admin: account {username!r} exists")
            return
        password = os.environ.get("COVET_ADMIN_PASSWORD")
        where = "from COVET_ADMIN_PASSWORD"
        if not password:
            password = secrets.token_urlsafe(18)
            path = Path(settings.VAR_DIR) / "admin_password"
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(password + "\n")
            where = f"in {path} (mode 0600)"
        User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(f"admin: created account {username!r}; its password is {where}")
