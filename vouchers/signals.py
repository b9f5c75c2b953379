"""Announcements of the vouchers app, sent after the database transaction commits.

``voucher_redeemed(sender=VoucherRedemption, redemption=...)``: a company registered a
code (for the "voucher redeemed" webhook and emails). Receivers must not write money: the
redemption is complete when they hear of it.
"""

from django.dispatch import Signal

voucher_redeemed = Signal()
