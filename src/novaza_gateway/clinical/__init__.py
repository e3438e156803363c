"""What the clinical areas share: patients, encounters, orders, worklist items. No HTTP."""
