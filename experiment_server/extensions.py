"""Flask extensions that keep their state in the app, created unbound and initialised by the app factory."""

from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()
login_manager = LoginManager()
