from django.apps import AppConfig


class RestoresConfig(AppConfig):
    name = "restores"
    verbose_name = "Restores"

    def ready(self):
        from core import registry
        from restores.models import RestoreRequest

        # A restore is not retried by itself: it may have written into its destination.
        registry.register(registry.JobKind("restore", RestoreRequest, run="restores.services.restore.run_restore",
                                           clean_up="restores.services.restore.clean_up_dead_restore"))
