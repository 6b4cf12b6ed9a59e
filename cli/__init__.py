"""The securediff command line (Typer + Rich). Nothing else imports it."""
