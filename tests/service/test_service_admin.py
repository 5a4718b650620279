"""POST /admin/reload by model name is confined to APG_BUNDLE_ROOT like a reload by path (issue 25: a repository
entry that is a symlink to elsewhere was followed out of the root)."""

from __future__ import annotations

from service_testing import ADMIN, TestClient, make_app
from synthetic_bundle import ROWS, build_bundle


def test_a_reload_by_name_resolves_symlinks_and_stays_inside_the_root(tmp_path):
    root = tmp_path / "models"
    build_bundle(root / "base", seed=0)
    build_bundle(root / "apg", seed=1)
    outside = build_bundle(tmp_path / "elsewhere" / "v9", version="v9", seed=2)
    inside = build_bundle(root / ".releases" / "apg-v2", version="v2", seed=3)  # not a model itself: a dot name
    app = make_app(root, models=root, bundle_root=None)  # the default root: the repository itself
    with TestClient(app, raise_server_exceptions=False, headers=ADMIN) as c:
        (root / "evil").symlink_to(outside.path)  # an entry that appeared after the start, pointing outside
        refused = c.post("/admin/reload", json={"model": "evil"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden", refused.text
        assert "evil" not in c.get("/readyz").json()["models"]
        (root / "apg-next").symlink_to(inside.path)  # a symlink inside the root is followed, as a path would be
        answer = c.post("/admin/reload", json={"model": "apg-next"})
        assert answer.status_code == 200 and answer.json()["model"]["version"] == "v2"
        assert c.post("/score", json={"instances": ROWS, "model": "apg-next"}).status_code == 200
        assert c.post("/admin/reload", json={"model": "apg"}).status_code == 200  # a plain entry as before
