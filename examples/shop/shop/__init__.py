"""An example shop: orders paid through the payments service, a receipt emailed once, and a
dispute posted to the shop's own webhook."""
