"""The project in a domain's metadata: ORBIT's element and Nova's, as libvirt returns them."""

from __future__ import annotations

import pytest

from orbit.virt.driver import Owner
from orbit.virt.libvirt_driver import NOVA_XMLNS, ORBIT_XMLNS, owner_xml, parse_owner

NS = ORBIT_XMLNS

NOVA = f"""<instance xmlns="{NOVA_XMLNS}"><name>vm</name><owner>
  <user uuid="u1">alice</user><project uuid="p-123">demo</project></owner></instance>"""


@pytest.mark.parametrize(
    ("xml", "namespace", "owner"),
    [
        (
            f'<project xmlns="{ORBIT_XMLNS}" id="p-1">demo</project>',
            ORBIT_XMLNS,
            Owner("p-1", "demo"),
        ),
        (f'<project xmlns="{NS}">demo</project>', NS, Owner(None, "demo")),
        (f'<project xmlns="{NS}" id="p-1"/>', NS, Owner("p-1", None)),
        (f'<project xmlns="{NS}"/>', NS, None),
        (f'<other xmlns="{NS}">demo</other>', NS, None),
        (NOVA, NOVA_XMLNS, Owner("p-123", "demo")),
        (f'<instance xmlns="{NOVA_XMLNS}"><name>vm</name></instance>', NOVA_XMLNS, None),
        ("<project", NS, None),
    ],
)
def test_parse_owner(xml: str, namespace: str, owner: Owner | None) -> None:
    assert parse_owner(xml, namespace) == owner


@pytest.mark.parametrize(
    "owner", [Owner("p-1", "demo"), Owner(None, "a <b> & 'c'"), Owner("p-2", None)]
)
def test_what_is_written_reads_back(owner: Owner) -> None:
    written = owner_xml(owner)
    # libvirt hands the element back in ORBIT's namespace
    returned = written.replace("<project", f'<project xmlns="{ORBIT_XMLNS}"', 1)
    assert parse_owner(returned, ORBIT_XMLNS) == owner
