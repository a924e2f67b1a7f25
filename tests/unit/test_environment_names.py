"""An Environment's name is a DNS-1035 label: its Service is named after it, and a
Service's name must begin with a letter. The CRD refuses any other name when the object
is made, and the REST API's create body refuses it first, both saying why."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from dockyard.api.routes.environments import EnvironmentCreate
from dockyard.core import crds
from dockyard.core.models.environment import Environment

SPEC = {"tier": "staging", "image": "shop:1.0"}


def _name_rule() -> dict[str, str]:
    schema = crds.render_crd(Environment)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    [rule] = schema["x-kubernetes-validations"]
    return rule


def _crd_takes(name: str) -> bool:
    """What the CRD's CEL rule says of a new object named ``name`` (RE2 and Python's
    ``re`` read its pattern alike)."""
    pattern = re.search(r"matches\(r'(.+)'\)\)$", _name_rule()["rule"])
    assert pattern is not None
    return len(name) <= 53 and re.fullmatch(pattern.group(1), name) is not None


def _refusal(name: str) -> str:
    with pytest.raises(ValidationError) as refused:
        EnvironmentCreate.model_validate({"metadata": {"name": name}, "spec": SPEC})
    [error] = refused.value.errors()
    assert error["loc"] == ("metadata", "name")
    return str(error["msg"])


@pytest.mark.parametrize("name", ["1shop", "0", "9-lives"])
def test_the_crd_refuses_a_new_name_beginning_with_a_digit(name: str) -> None:
    assert not _crd_takes(name)


@pytest.mark.parametrize("name", ["shop", "s", "shop-2", "a1b2"])
def test_the_crd_takes_a_name_beginning_with_a_letter(name: str) -> None:
    assert _crd_takes(name)


def test_the_crds_refusal_names_the_rule_and_why() -> None:
    message = _name_rule()["message"]

    assert "DNS-1035 label" in message
    assert "beginning with a letter" in message
    assert "Service's name must begin with a letter" in message


def test_an_existing_environment_keeps_its_name() -> None:
    """The rule holds on create only, so an Environment made before it stays writable."""
    rule = _name_rule()

    assert rule["rule"].startswith("oldSelf.hasValue() || ")
    assert rule["optionalOldSelf"] is True


def test_the_api_refuses_a_name_beginning_with_a_digit_saying_why() -> None:
    message = _refusal("1shop")

    assert "metadata.name must be a DNS-1035 label" in message
    assert "Service's name must begin with a letter" in message


def test_the_api_takes_a_name_beginning_with_a_letter() -> None:
    body = EnvironmentCreate.model_validate({"metadata": {"name": "shop-1"}, "spec": SPEC})

    assert body.model_dump()["metadata"]["name"] == "shop-1"
