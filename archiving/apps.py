from django.apps import AppConfig


class ArchivingConfig(AppConfig):
    name = "archiving"
    verbose_name = "Archiving (WAL and binlogs)"

    def ready(self):
        from archiving import receivers  # noqa: F401 - connects the signal receivers
