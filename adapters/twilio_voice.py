"""Twilio Programmable Voice, the pure half: webhook parameters in, normalized events and TwiML out.

Nothing here does I/O, so every mapping is tested without a server. The plugin
(:mod:`adapters.twilio`) checks signatures, calls ``Switch.ingest`` and answers with what these
functions build. Bad parameters raise :class:`~router.errors.BadRequest` naming the field.

Events (see docs/adapters-voice.md):

- an inbound call         → ``call.offered``        id ``twilio:<CallSid>:offered``
- a terminal call status  → ``call.ended``          id ``twilio:<CallSid>:status:<SequenceNumber>``,
  ``seq`` = SequenceNumber, so the core applies status callbacks in order and drops repeats
- keypress 1 while on hold → ``callback.requested`` id ``twilio:<CallSid>:callback``

Every event's ``thread`` is the CallSid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twilio.twiml.voice_response import VoiceResponse

from router.errors import BadRequest
from router.ingest import E164

__all__ = [
    "CALLBACK_DIGIT",
    "TERMINAL_STATUSES",
    "Contact",
    "callable_number",
    "callback_event",
    "callback_twiml",
    "caller_identities",
    "dial_twiml",
    "hangup_twiml",
    "hold_twiml",
    "offered_event",
    "outbound_callback_twiml",
    "parse_contact",
    "status_event",
    "valid_call_sid",
]

CALLBACK_DIGIT = "1"
#: CallStatus values after which the call is over (Twilio's status callback vocabulary).
TERMINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})

_CALL_SID = re.compile(r"^CA[0-9a-f]{32}$")
_DIGITS = re.compile(r"^[0-9*#]{1,32}$")
_TOPIC = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_SEQ = re.compile(r"^[0-9]{1,9}$")
# Twilio's placeholder caller ids for anonymous, unknown, private and blocked callers: they look
# like E.164 numbers but belong to nobody, so they must not merge strangers into one customer.
_PLACEHOLDERS = frozenset({"+266696687", "+86282452253", "+7378742833", "+2562533"})
_MAX_ATTR = 200
# Twilio parameter -> task attribute (workflow expressions see these names).
_CALL_ATTRIBUTES = {
    "To": "to",
    "From": "caller",
    "CallerName": "caller_name",
    "FromCity": "caller_city",
    "FromState": "caller_state",
    "FromZip": "caller_zip",
    "FromCountry": "caller_country",
    "ForwardedFrom": "forwarded_from",
}

HOLD_GREETING = "Thank you for calling. All of our agents are busy; please hold."
TRANSFER_NOTICE = "Please hold while we transfer your call."
NOBODY = "We are sorry, no one can take your call right now. Please call again later. Goodbye."
CALLBACK_OFFER = "Press 1 at any time to be called back instead of waiting."
CALLBACK_CONFIRMATION = (
    "Thank you. We have kept your place in line and will call you back at this number. Goodbye."
)


def valid_call_sid(value: str) -> bool:
    return bool(_CALL_SID.match(value))


def _param(params: Mapping[str, str], name: str, *, required: bool = False) -> str:
    v = params.get(name) or ""
    if required and not v:
        raise BadRequest(f"{name}: required", code="twilio.invalid")
    return v[:_MAX_ATTR]


def _call_sid(params: Mapping[str, str]) -> str:
    sid = params.get("CallSid") or ""
    if not valid_call_sid(sid):
        raise BadRequest("CallSid: expected CA followed by 32 hex digits", code="twilio.invalid")
    return sid


def callable_number(caller: str) -> bool:
    """Whether ``caller`` (Twilio's ``From``) is a real phone number we could call back."""
    return bool(E164.match(caller)) and caller not in _PLACEHOLDERS


def caller_identities(caller: str, call_sid: str) -> dict[str, str]:
    """The customer identities of a call: their phone number when it is a real one; a Twilio
    Client or SIP caller by that address; anyone else (anonymous, withheld) only this call."""
    if callable_number(caller):
        return {"phone": caller}
    if caller.startswith(("client:", "sip:", "sips:")) and re.match(
        r"^[\x21-\x7e]{1,190}$", caller
    ):
        return {"external": f"twilio:{caller}"}
    return {"external": f"twilio-call:{call_sid}"}


def offered_event(params: Mapping[str, str], *, topic: str = "") -> dict[str, Any]:
    """The ``call.offered`` event of an inbound-call webhook.

    Task attributes: ``to``, ``caller``, ``caller_city`` … (whatever Twilio sent), ``digits``
    when the request carries ``Digits`` (an IVR in front posted here), ``topic`` from the
    webhook URL's ``topic`` query parameter.
    """
    sid = _call_sid(params)
    caller = _param(params, "From", required=True)
    attributes: dict[str, Any] = {}
    for name, attr in _CALL_ATTRIBUTES.items():
        v = _param(params, name)
        if v:
            attributes[attr] = v
    digits = params.get("Digits") or ""
    if digits:
        if not _DIGITS.match(digits):
            raise BadRequest("Digits: 0-9, * and #", code="twilio.invalid")
        attributes["digits"] = digits
    if topic:
        if not _TOPIC.match(topic):
            raise BadRequest("topic: letters, digits and _.:- (at most 64)", code="twilio.invalid")
        attributes["topic"] = topic
    to = attributes.get("to", "")
    return {
        "id": f"twilio:{sid}:offered",
        "channel": "voice",
        "kind": "call.offered",
        "identities": caller_identities(caller, sid),
        "name": _param(params, "CallerName"),
        "thread": sid,
        "text": f"Inbound call to {to}" if to else "Inbound call",
        "attributes": attributes,
    }


def status_event(params: Mapping[str, str]) -> dict[str, Any] | None:
    """The ``call.ended`` event of a status callback, or None for a status that changes nothing
    (queued, ringing, in-progress: the call already is a case from its inbound webhook).

    The idempotency key is CallSid + SequenceNumber; ``seq`` lets the core ignore a status that
    arrives after a newer one. Without a SequenceNumber the status itself is the key.
    """
    sid = _call_sid(params)
    status = _param(params, "CallStatus", required=True)
    if status not in TERMINAL_STATUSES:
        return None
    raw_seq = params.get("SequenceNumber") or ""
    if raw_seq and not _SEQ.match(raw_seq):
        raise BadRequest("SequenceNumber: a non-negative integer", code="twilio.invalid")
    seq = int(raw_seq) if raw_seq else None
    attributes: dict[str, Any] = {"call_status": status}
    duration = params.get("CallDuration") or ""
    text = f"Call {status}"
    if duration.isdigit() and len(duration) < 9:
        attributes["duration_s"] = int(duration)
        text += f" after {int(duration)} s"
    return {
        "id": f"twilio:{sid}:status:{raw_seq or status}",
        "channel": "voice",
        "kind": "call.ended",
        "identities": caller_identities(_param(params, "From"), sid),
        "name": _param(params, "CallerName"),  # who the history shows it from, as the call
        "thread": sid,
        "text": text,
        "attributes": attributes,
        "seq": seq,
    }


def callback_event(params: Mapping[str, str]) -> dict[str, Any] | None:
    """The ``callback.requested`` event of a hold-loop keypress, or None when the keypress is
    not the callback digit or the caller has no number to call back."""
    sid = _call_sid(params)
    caller = _param(params, "From")
    if params.get("Digits") != CALLBACK_DIGIT or not callable_number(caller):
        return None
    return {
        "id": f"twilio:{sid}:callback",
        "channel": "voice",
        "kind": "callback.requested",
        "identities": {"phone": caller},
        "name": _param(params, "CallerName"),
        "thread": sid,
        "text": f"Caller asked to be called back at {caller}",
        "attributes": {"callback_number": caller},
    }


# -- TwiML ---------------------------------------------------------------------------------------


def hold_twiml(
    *,
    gather_url: str,
    hold_url: str,
    callback: bool,
    greeting: bool,
    music_url: str = "",
    pause_s: int = 20,
    transfer: bool = False,
) -> str:
    """What a waiting caller hears: a greeting (first time; ``transfer``: the notice that they
    are being transferred), the callback offer when they can be called back (inside a one-digit
    ``<Gather>`` posting to ``gather_url``), hold music or a pause, then a ``<Redirect>`` to
    ``hold_url`` for another round. It ends when the plugin updates the live call (an agent
    accepted), the caller presses the callback digit, or a round finds that nobody will come
    (the plugin answers :func:`hangup_twiml` instead)."""
    r = VoiceResponse()
    verbs = r.gather(num_digits=1, action=gather_url, method="POST", timeout=1) if callback else r
    if transfer:
        verbs.say(TRANSFER_NOTICE)
    if greeting:
        verbs.say(HOLD_GREETING)
    if callback:
        verbs.say(CALLBACK_OFFER)
    if music_url:
        verbs.play(music_url)
    else:
        verbs.pause(length=pause_s)
    r.redirect(hold_url, method="POST")
    return str(r)


def hangup_twiml(message: str = NOBODY) -> str:
    """The end of a call nobody will answer any more (its case was closed while the caller
    held, or the agent's leg ended and the conversation with it)."""
    r = VoiceResponse()
    if message:
        r.say(message)
    r.hangup()
    return str(r)


def callback_twiml() -> str:
    """The confirmation after keypress 1; the call ends, the case keeps its place in line."""
    r = VoiceResponse()
    r.say(CALLBACK_CONFIRMATION)
    r.hangup()
    return str(r)


@dataclass(frozen=True, slots=True)
class Contact:
    """Where an agent answers calls: a Twilio Client identity, a SIP URI or a phone number."""

    kind: str  # client | sip | number
    address: str  # identity, SIP URI or E.164 number

    @property
    def to(self) -> str:
        """The ``To`` of an outbound call to this contact (Twilio's Calls resource syntax)."""
        return f"client:{self.address}" if self.kind == "client" else self.address


def parse_contact(value: Any) -> Contact:
    """Parse an agent's ``contact_uri`` attribute: ``client:<identity>``, ``sip:…``/``sips:…``
    or an E.164 number. Raises ValueError naming what is wrong."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("the agent has no contact_uri attribute")
    v = value.strip()
    if v.startswith("client:") and re.match(r"^[A-Za-z0-9_.@+-]{1,121}$", v[7:]):
        return Contact("client", v[7:])
    if v.startswith(("sip:", "sips:")) and re.match(r"^[\x21-\x7e]{5,255}$", v):
        return Contact("sip", v)
    if E164.match(v):
        return Contact("number", v)
    raise ValueError(f"contact_uri {v[:80]!r}: expected client:<id>, sip:<uri> or +E.164")


def _dial_to(r: VoiceResponse, contact: Contact, caller_id: str = "", action: str = "") -> None:
    opts: dict[str, Any] = {}
    if caller_id:
        opts["caller_id"] = caller_id
    if action:
        opts["action"] = action
        opts["method"] = "POST"
    dial = r.dial(**opts)
    if contact.kind == "client":
        dial.client(contact.address)
    elif contact.kind == "sip":
        dial.sip(contact.address)
    else:
        dial.number(contact.address)


def dial_twiml(contact: Contact, action: str = "") -> str:
    """The TwiML that replaces the hold loop of a live call once an agent accepted it.
    ``action``: where Twilio asks what next when the agent's leg ends (``/voice/twilio/dialed``):
    back on hold if the agent transferred the call meanwhile, else the end of the call."""
    r = VoiceResponse()
    _dial_to(r, contact, action=action)
    return str(r)


def outbound_callback_twiml(customer: str, caller_id: str) -> str:
    """The TwiML of the agent's leg of a callback: announce it, then dial the customer."""
    r = VoiceResponse()
    r.say("Callback. Connecting you to the customer now.")
    _dial_to(r, Contact("number", customer), caller_id)
    return str(r)
