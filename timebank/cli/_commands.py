"""Every command, registered on the root group by importing its module."""

from timebank.cli import _daily, _data, _reading, _setup  # noqa: F401 - registration
from timebank.cli._root import root

#: One line each for the root's --help (the docstrings' first sentences run longer).
SHORT_HELP = {
    "db": "Create, upgrade and check the schema.",
    "programme": "Create and show programmes.",
    "policy": "Show a policy; put a new version in force.",
    "region": "Add and show regions.",
    "site": "Add, list and show stations and institutions.",
    "operator": "Add and show staff and their roles.",
    "member": "Register, find and look after members.",
    "record": "Record a service (pending until confirmed).",
    "confirm": "Confirm a service; deposits its minutes.",
    "reject": "Reject a pending service.",
    "reverse": "Reverse a confirmed service's deposit.",
    "confirm-due": "Confirm services whose policy delay passed.",
    "book": "Book care, holding the member's minutes.",
    "complete": "Complete a booking: redeem its minutes.",
    "cancel": "Cancel a booking, releasing its minutes.",
    "redeem": "Pay minutes for care received.",
    "gift": "Give minutes to a relative.",
    "donate": "Donate minutes to a region's pool.",
    "grant": "Grant pool minutes to an elder.",
    "expire": "Expire lots past their expiry day.",
    "freeze": "Freeze a member: nothing moves.",
    "unfreeze": "Make a frozen member active again.",
    "balance": "A member's balance, held and free minutes.",
    "statement": "A member's statement for a period.",
    "lots": "A member's lots: where earned, when they expire.",
    "show": "One service, booking, redemption, gift...",
    "report": "Station, region and other reports.",
    "clearing": "Clearing positions between stations or regions.",
    "settle": "Settle a period's clearing.",
    "exposure": "The guarantee exposure.",
    "export": "Export entries, postings, members or lots.",
    "import": "Import a programme's history from CSV.",
    "demo": "Simulate a small province's month and report.",
    "simulate": "Simulate a province into an empty database.",
    "seal": "Seal new entries into the hash chain.",
    "digest": "The latest seal's digest, to keep elsewhere.",
    "audit": "Check the chain, balances, lots and zero sum.",
}

for _name, _help in SHORT_HELP.items():
    root.commands[_name].short_help = _help

__all__ = ["root"]
