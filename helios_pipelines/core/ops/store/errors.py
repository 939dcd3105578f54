"""What a store operation refuses, each error naming the customer or row it is about."""

from __future__ import annotations


class StoreError(Exception):
    """A store operation that cannot be done as asked; the message says why."""


class UnknownCustomerError(StoreError, KeyError):
    def __str__(self) -> str:
        return self.args[0]


class DuplicateCustomerError(StoreError):
    pass


class CustomerDisabledError(StoreError):
    pass


class UnknownAnomalyError(StoreError, KeyError):
    def __str__(self) -> str:
        return self.args[0]


class ForeignAnomalyError(StoreError, PermissionError):
    """An anomaly episode that exists but belongs to another tenant than the one asking."""
