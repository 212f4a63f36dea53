"""The channel library: email, SMS, push, webhook, their HTTP rules, templates and the sandbox."""
