"""RD Station webhook bodies as reference/specs.md §3.4 and §3.5 quote them (RD's payload pages), for the tests."""

from __future__ import annotations

import copy
import json
from typing import Any

# Marketing API 1.x (legacy): the lead of RD's migration page, strings for booleans and numbers included.
LEGACY_LEAD: dict[str, Any] = {
    "id": "1",
    "uuid": "c2f3d2b3-7250-4d27-97f4-eef38be32f7f",
    "email": "lead@example.com",
    "name": "Lead Name",
    "company": "Company Name",
    "job_title": "Job",
    "bio": "This is my bio",
    "created_at": "2012-06-04T15:31:35-03:00",
    "opportunity": "false",
    "number_conversions": "3",
    "user": "owner@example.com",
    "first_conversion": {
        "content": {
            "identificador": "ebook-abc",
            "nome": "Lead Name",
            "email_lead": "lead@example.com",
            "telefone": "99999999",
            "empresa": "Company Name",
            "cargo": "IT",
        },
        "created_at": "2012-06-04T15:31:35-03:00",
        "cumulative_sum": "1",
        "source": "source 1",
        "conversion_origin": {
            "source": "source 1",
            "medium": "medium 1",
            "value": "value 1",
            "campaign": "campaign 1",
            "channel": "channel 1",
        },
    },
    "last_conversion": {
        "content": {"identificador": "webinar-abc", "email_lead": "lead@example.com"},
        "created_at": "2012-06-04T15:31:35-03:00",
        "cumulative_sum": "2",
        "source": "source 2",
    },
    "custom_fields": {},
    "website": "http://www.mywebsite.com",
    "personal_phone": "48 999999999",
    "mobile_phone": "48 999999999",
    "city": "Florianópolis",
    "state": "SC",
    "lead_stage": "Lead",
    "tags": ["tag 1", "tag 2"],
    "fit_score": "d",
    "interest": 0,
}

# Marketing API 2.0: RD's "Webhooks MKT payload" page.
CONVERTED: dict[str, Any] = {
    "event_type": "WEBHOOK.CONVERTED",
    "entity_type": "CONTACT",
    "event_identifier": "my-event-identifier",
    "timestamp": "2018-03-13T14:09:02.724-03:00",
    "event_timestamp": "2018-03-13T14:07:04.254-03:00",
    "contact": {
        "uuid": "c2f3d2b3-7250-4d27-97f4-eef38be32f7f",
        "email": "lead@example.com",
        "name": "Contact Name",
        "job_title": "Developer",
        "bio": "This is my bio",
        "website": "http://rdstation.com.br",
        "personal_phone": "48 30252598",
        "mobile_phone": "48 30252598",
        "city": "Florianópolis",
        "facebook": "Contact Facebook",
        "linkedin": "Contact Linkedin",
        "twitter": "Contact Twitter",
        "tags": ["tag 1", "tag 2"],
        "cf_custom_field_example": ["Option1", "Option2"],
        "legal_bases": [{"category": "communications", "type": "consent", "status": "granted"}],
        "company": {"name": "Company Example 0"},
        "funnel": {
            "name": "default",
            "lifecycle_stage": "Lead",
            "opportunity": False,
            "contact_owner_email": "owner@example.com",
            "interest": 20,
            "fit": 0,
            "origin": "Busca Paga | Google",
        },
    },
}

# RD Station CRM v1: the deal payload page (ids and dates filled in where the page elides them).
CRM_DEAL: dict[str, Any] = {
    "event_name": "crm_deal_created",
    "document": {
        "id": "5e8f1c2a9b3d4e0017a1b2c3",
        "name": "Big deal",
        "amount_monthly": 0.0,
        "amount_unique": 0.0,
        "amount_total": 0.0,
        "prediction_date": None,
        "created_at": "2020-04-09T15:10:34.569-03:00",
        "updated_at": "2020-04-09T15:10:34.569-03:00",
        "rating": 1,
        "status": "ongoing",
        "closed_at": None,
        "user": {"id": "5e8f1c2a9b3d4e0017a1b2c0", "name": "Owner", "email": "owner@example.com"},
        "deal_stage": {"id": "5e8f1c2a9b3d4e0017a1b2c1", "name": "Sem contato"},
        "deal_pipeline": {"id": "5e8f1c2a9b3d4e0017a1b2c2", "name": "Funil padrão"},
        "deal_source": {},
        "campaign": {},
        "deal_lost_reason": {},
        "deal_custom_fields": [
            {
                "value": None,
                "custom_field": {
                    "id": "5e8f1c2a9b3d4e0017a1b2c4",
                    "label": "Plano",
                    "required": False,
                    "unique": False,
                    "opts": [],
                    "type": "option",
                },
            }
        ],
    },
}


def lead(**changes: Any) -> dict[str, Any]:
    """A deep copy of the legacy lead with top-level fields replaced."""
    value = copy.deepcopy(LEGACY_LEAD)
    value.update(changes)
    return value


def legacy(*leads: dict[str, Any]) -> dict[str, Any]:
    return {"leads": list(leads)}


def converted(**changes: Any) -> dict[str, Any]:
    value = copy.deepcopy(CONVERTED)
    value.update(changes)
    return value


def crm(event_name: str = "crm_deal_created", **document_changes: Any) -> dict[str, Any]:
    value = copy.deepcopy(CRM_DEAL)
    value["event_name"] = event_name
    value["document"].update(document_changes)
    return value


def encode(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()
