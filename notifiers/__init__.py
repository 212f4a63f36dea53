"""Notification channels. Until the email, SMS and push channels land, every
channel name is delivered to the console."""
