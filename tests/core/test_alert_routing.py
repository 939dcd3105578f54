"""The rendered alert ConfigMap is what the served tenant routes its alerts by (serving/alert_routing.py)."""

from types import SimpleNamespace

import pytest
import yaml

from helios_pipelines.commands.deploy import alerts_document
from serving.alert_routing import AlertFileError, apply_alert_file
from tests.harness.store_backends import tenant_config


def test_the_configmap_replaces_the_bundle_s_routing_secrets_named_not_held(tmp_path):
    rendered = tenant_config(webhooks=[{"name": "oncall", "type": "webhook", "url_env": "ONCALL_URL",
                                        "secret_env": "ONCALL_SECRET", "events": ["anomaly_detected"]}])
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(alerts_document(rendered)))
    served = SimpleNamespace(tenant=tenant_config(webhooks=[]))  # packed before the on-call hook existed
    assert apply_alert_file({"acme": served}, str(tmp_path / "alerts.yaml")) == "acme"
    (hook,) = served.tenant.alerts.webhooks
    assert (hook.name, hook.url, hook.url_env, hook.secret_env) == ("oncall", None, "ONCALL_URL", "ONCALL_SECRET")
    assert served.tenant.alerts.thresholds == rendered.alerts.thresholds


def test_an_alert_file_for_another_tenant_or_broken_is_refused_naming_it(tmp_path):
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(alerts_document(tenant_config("other"))))
    with pytest.raises(AlertFileError, match=r"alerts.yaml: routes tenant 'other', not one this service serves \(acme\)"):
        apply_alert_file({"acme": SimpleNamespace(tenant=tenant_config())}, str(path))
    path.write_text("tenant: acme\nwebhooks: [{name: x, type: fax, events: [anomaly_detected]}]\n")
    with pytest.raises(AlertFileError, match=r"(?s)alerts.yaml: .*type.*fax"):
        apply_alert_file({"acme": SimpleNamespace(tenant=tenant_config())}, str(path))
    assert apply_alert_file({"acme": SimpleNamespace(tenant=tenant_config())}, "") is None  # no file: the bundle's
