"""The scheduler: one leader (a Redis lock) enqueues periodic jobs; standbys wait."""
