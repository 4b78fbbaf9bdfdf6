"""The migrations describe the models: a model changed without its migration fails here, not on a deploy."""

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_every_model_change_has_its_migration():
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
    except SystemExit as exc:
        pytest.fail(f"models and migrations differ (exit {exc.code}): run manage.py makemigrations\n{out.getvalue()}")
