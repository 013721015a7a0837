"""A self-hosted Discord assistant that answers questions about a server's own history."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/discord-history-assistant/discord-history-assistant"
