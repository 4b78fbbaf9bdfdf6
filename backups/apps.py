from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "backups"
    verbose_name = "Backups"

    def ready(self):
        from backups.models import Backup
        from core import registry

        registry.register(registry.JobKind("backup", Backup, run="backups.services.runs.run_backup",
                                           clean_up="backups.services.runs.clean_up_dead_backup",
                                           retries=2))
