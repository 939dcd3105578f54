"""Customers are the partitions: the key is the tenant id from the registry.

Dynamic, so a tenant added to the registry becomes a partition without a redeploy (the
``tenant_registry_sensor`` keeps them in step).
"""

from dagster import DynamicPartitionsDefinition

tenant_partitions = DynamicPartitionsDefinition(name="tenants")
