from django.apps import AppConfig


class VerificationConfig(AppConfig):
    name = "verification"
    verbose_name = "Verification"

    def ready(self):
        from core import registry
        from verification.models import VerificationRun

        registry.register(registry.JobKind("verification", VerificationRun,
                                           run="verification.services.run_verification", retries=2))
