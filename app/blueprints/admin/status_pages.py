"""Publishing endpoint groups as public status pages."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from app.blueprints.admin import bp
from app.blueprints.admin.signin import changes_configuration
from app.services import status_pages


@bp.get("/status-pages")
def status_page_settings():
    published = set(status_pages.published_groups())
    titles = status_pages.configured_titles()
    groups = [(name, count, name in published, status_pages.slug_of(name))
              for name, count in status_pages.groups()]
    return render_template("admin/status_pages.html", groups=groups, titles=titles,
                           default_title=status_pages.title_for, max_title=status_pages.MAX_TITLE_LENGTH)


@bp.post("/status-pages/title")
@changes_configuration
def title_status_page():
    """Give a group's public page a title (blank: the group's name as words)."""
    group = request.form.get("group", "")
    try:
        shown = status_pages.set_title(group, request.form.get("title", ""))
    except ValueError as exc:
        flash(str(exc).capitalize() + ".", "error")
    else:
        flash(f"The status page of “{group}” is titled “{shown}”.", "info")
    return redirect(url_for("admin.status_page_settings"), code=303)


@bp.post("/status-pages")
@changes_configuration
def publish_status_page():
    group = request.form.get("group", "")
    publish = request.form.get("publish") == "1"
    try:
        status_pages.set_published(group, publish)
    except ValueError as exc:
        flash(str(exc).capitalize() + ".", "error")
        return redirect(url_for("admin.status_page_settings"), code=303)
    if publish:
        flash(f"The status page of “{group}” is public at "
              f"{url_for('ui.status_page', slug=status_pages.slug_of(group), _external=True)}", "info")
    else:
        flash(f"The status page of “{group}” is withdrawn.", "info")
    return redirect(url_for("admin.status_page_settings"), code=303)
