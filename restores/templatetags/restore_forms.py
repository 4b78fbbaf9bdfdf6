"""The restore form, for pages of other apps (a backup's page) that offer a restore."""

from django import template

from restores.forms import RestoreForm

register = template.Library()


@register.simple_tag
def restore_form() -> RestoreForm:
    """Return an empty restore form."""
    return RestoreForm()
