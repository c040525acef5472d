"""The console's words in French (the default) and English; one table, looked up by key."""

from __future__ import annotations

LANGUAGES = ("fr", "en")
DEFAULT = "fr"

_TEXT: dict[str, dict[str, str]] = {
    "title": {"fr": "Console opérateur CSU", "en": "CSU operator console"},
    "login": {"fr": "Connexion", "en": "Log in"},
    "name": {"fr": "Identifiant", "en": "Operator name"},
    "password": {"fr": "Mot de passe", "en": "Password"},
    "code": {
        "fr": "Code à usage unique (application d'authentification)",
        "en": "One-time code (authenticator app)",
    },
    "cert_presented": {
        "fr": "Certificat de connexion présenté :",
        "en": "Log-in certificate presented:",
    },
    "cert_code": {
        "fr": "Code à usage unique (seulement si votre compte en utilise un)",
        "en": "One-time code (only if your account uses one)",
    },
    "refused": {
        "fr": "Connexion refusée. Vérifiez vos informations ou contactez votre superviseur.",
        "en": "Log-in refused. Check your details or ask your supervisor.",
    },
    "logout": {"fr": "Se déconnecter", "en": "Log out"},
    "logged_in_as": {"fr": "Connecté en tant que", "en": "Logged in as"},
    "role": {"fr": "Rôle", "en": "Role"},
    "scope": {"fr": "Périmètre", "en": "Scope"},
    "whole_fleet": {"fr": "toutes les caméras", "en": "every camera"},
    "cameras": {"fr": "Caméras autorisées", "en": "Cameras you may view"},
    "no_camera": {"fr": "Aucune caméra reçue.", "en": "No camera received yet."},
    "other_language": {"fr": "English", "en": "Français"},
    "session_note": {
        "fr": "La session se ferme après 15 minutes d'inactivité. "
        "Chaque visionnage est journalisé.",
        "en": "The session ends after 15 idle minutes. Every viewing is logged.",
    },
    "nav": {"fr": "Navigation", "en": "Navigation"},
    "live": {"fr": "Direct", "en": "Live"},
    "units": {"fr": "Unités", "en": "Units"},
    "layout": {"fr": "Disposition du mur", "en": "Wall layout"},
    "tile": {"fr": "vignette", "en": "tile"},
    "tiles": {"fr": "vignettes", "en": "tiles"},
    "wall_help": {
        "fr": "Touches 1, 4, 9 : disposition ; Entrée sur une vignette : plein écran ; "
        "liste en haut de chaque vignette : la caméra qu'elle montre (mémorisé dans ce "
        "navigateur).",
        "en": "Keys 1, 4, 9: layout; Enter on a tile: show it alone; list at the top of each "
        "tile: the camera it shows (remembered in this browser).",
    },
    "tile_camera": {"fr": "Caméra de la vignette {}", "en": "Camera of tile {}"},
    "state_waiting": {"fr": "en attente", "en": "waiting"},
    "state_live": {"fr": "direct", "en": "live"},
    "state_refused": {"fr": "refusé", "en": "refused"},
    "state_error": {"fr": "erreur", "en": "error"},
    "unit": {"fr": "Unité", "en": "Unit"},
    "camera": {"fr": "Caméra", "en": "Camera"},
    "last_contact": {"fr": "Dernier contact", "en": "Last contact"},
    "backlog": {"fr": "Retard d'envoi", "en": "Backlog"},
    "chain": {"fr": "Chaîne", "en": "Chain"},
    "certificate": {"fr": "Certificat de signature", "en": "Signing certificate"},
    "software": {"fr": "Logiciel (partition)", "en": "Software (slot)"},
    "door": {"fr": "Porte", "en": "Door"},
    "tamper": {"fr": "Sabotage", "en": "Tamper"},
    "door_open": {"fr": "OUVERTE", "en": "OPEN"},
    "door_closed": {"fr": "fermée", "en": "closed"},
    "none_raised": {"fr": "aucun", "en": "none"},
    "rolled_back": {"fr": "mise à jour annulée", "en": "update rolled back"},
    "never": {"fr": "jamais", "en": "never"},
    "ago": {"fr": "il y a {} s", "en": "{} s ago"},
    "pinned": {"fr": "clé épinglée", "en": "pinned key"},
    "untrusted": {"fr": "NON RECONNU", "en": "NOT TRUSTED"},
    "alerts": {"fr": "Alertes", "en": "Alerts"},
    "audit": {"fr": "Journal", "en": "Audit log"},
    "when": {"fr": "Heure", "en": "Time"},
    "rule": {"fr": "Règle", "en": "Rule"},
    "what": {"fr": "Alerte", "en": "Alert"},
    "decision": {"fr": "Décision", "en": "Decision"},
    "comment": {"fr": "Commentaire (facultatif)", "en": "Comment (optional)"},
    "confirm": {"fr": "Confirmer", "en": "Confirm"},
    "dismiss": {"fr": "Rejeter", "en": "Dismiss"},
    "escalate": {"fr": "Transmettre", "en": "Escalate"},
    "decided_confirm": {"fr": "confirmée", "en": "confirmed"},
    "decided_dismiss": {"fr": "rejetée", "en": "dismissed"},
    "decided_escalate": {"fr": "transmise", "en": "escalated"},
    "by": {"fr": "par", "en": "by"},
    "in_s": {"fr": "en {} s", "en": "in {} s"},
    "no_alert": {"fr": "Aucune alerte.", "en": "No alert."},
    "snapshot": {"fr": "image jointe", "en": "snapshot attached"},
    "masks_overlay": {"fr": "Masques", "en": "Masks"},
    "masks_none": {
        "fr": "aucun contour de masque connu pour cette caméra",
        "en": "no mask outline known for this camera",
    },
    "view_snapshot": {"fr": "voir l'image", "en": "view snapshot"},
    "snapshot_of": {"fr": "Image de l'alerte {}", "en": "Snapshot of alert {}"},
    "rates": {"fr": "Taux de fausses alertes par règle", "en": "False-alarm rate per rule"},
    "decided_n": {"fr": "décidées", "en": "decided"},
    "dismissed_n": {"fr": "rejetées", "en": "dismissed"},
    "rate": {"fr": "taux", "en": "rate"},
    "search": {"fr": "Rechercher", "en": "Search"},
    "who": {"fr": "Qui", "en": "Who"},
    "action": {"fr": "Action", "en": "Action"},
    "details": {"fr": "Détails", "en": "Details"},
    "signature": {"fr": "Signature", "en": "Signature"},
    "signed": {"fr": "signé", "en": "signed"},
    "unsigned": {"fr": "NON SIGNÉ", "en": "UNSIGNED"},
    "chain_ok": {
        "fr": "Chaînage du journal vérifié.",
        "en": "The log's hash chain verifies.",
    },
    "playback": {"fr": "Relecture", "en": "Playback"},
    "from_utc": {"fr": "Du (UTC)", "en": "From (UTC)"},
    "to_utc": {"fr": "Au (UTC)", "en": "To (UTC)"},
    "show": {"fr": "Afficher", "en": "Show"},
    "nothing": {"fr": "Rien d'enregistré sur cette période.", "en": "Nothing recorded then."},
    "pb_play": {"fr": "Lecture / pause", "en": "Play / pause"},
    "pb_back": {"fr": "−10 s", "en": "−10 s"},
    "pb_forward": {"fr": "+10 s", "en": "+10 s"},
    "pb_step": {"fr": "Image suivante", "en": "Next frame"},
    "pb_help": {
        "fr": "Espace : lecture/pause ; ← → : 10 s ; . : image suivante ; "
        "clic sur la frise : aller à l'heure. En rouge : trous d'enregistrement.",
        "en": "Space: play/pause; ← →: 10 s; .: next frame; click the timeline to go there. "
        "Red: gaps in the recording.",
    },
    "evidence": {"fr": "Réquisition", "en": "Evidence"},
    "case": {"fr": "Numéro de procédure", "en": "Case number"},
    "export": {"fr": "Exporter (MP4)", "en": "Export (MP4)"},
    "export_bundle": {
        "fr": "Exporter le dossier de preuve signé (.tar)",
        "en": "Export the signed evidence bundle (.tar)",
    },
    "bundle_building": {
        "fr": "Préparation du dossier signé… le téléchargement démarre dès qu'il est scellé.",
        "en": "Building the signed bundle… the download starts once it is sealed.",
    },
    "bundle_note": {
        "fr": "Le dossier signé contient les segments chiffrés tels que la borne les a signés, "
        "leurs clés d'époque, les pertes déclarées par la borne et les destructions au titre "
        "de la durée de conservation, scellés par le CSU ; il se vérifie hors ligne avec "
        "« edge-csu verify DOSSIER.tar --ca RACINE --csu-key CLÉ » et s'ouvre avec "
        "« edge-csu open ».",
        "en": "The signed bundle holds the encrypted segments as the unit signed them, their "
        "epoch keys, the losses the unit declared and the retention deletions, sealed by the "
        'CSU; check it offline with "edge-csu verify BUNDLE.tar --ca ROOT --csu-key KEY" and '
        'open it with "edge-csu open".',
    },
    "retention": {
        "fr": "Les enregistrements sont détruits au bout de 30 jours au plus (CSI L252-5) ; "
        "seul un export pour une procédure judiciaire peut être conservé au-delà.",
        "en": "Recordings are destroyed after 30 days at most (CSI L252-5); only an export "
        "for judicial proceedings may be kept longer.",
    },
    "oldest": {"fr": "Plus ancien enregistrement", "en": "Oldest recording"},
    "expires": {"fr": "détruit au plus tard le", "en": "destroyed by"},
    "export_note": {
        "fr": "L'export (une heure au plus) est journalisé avec le numéro de procédure.",
        "en": "The export (one hour at most) is audited with the case number.",
    },
    "requests": {
        "fr": "Demandes de confirmation (sorties de l'armoire)",
        "en": "Confirmation requests (cabinet outputs)",
    },
    "requests_help": {
        "fr": "Rien ne bouge dans la rue tant qu'un agent ne confirme pas, avec sa propre clé "
        "d'opérateur : copiez la commande, remplacez AGENT.key et AGENT.crt par votre clé et "
        "votre certificat, et lancez-la sur le poste de commande. La console ne signe rien à "
        "votre place.",
        "en": "Nothing moves in the street until an agent confirms, with their own operator "
        "key: copy the command, replace AGENT.key and AGENT.crt with your key and certificate "
        "and run it on the command workstation. The console signs nothing on your behalf.",
    },
    "unit_output": {"fr": "Unité / sortie (caméra)", "en": "Unit / output (camera)"},
    "playbook_col": {"fr": "Scénario, motif, événement", "en": "Playbook, reason, event"},
    "time_left": {"fr": "Délai", "en": "Time left"},
    "confirm_command": {"fr": "Commande de confirmation", "en": "Confirmation command"},
    "no_request": {"fr": "Aucune demande en attente.", "en": "No request waiting."},
    "event": {"fr": "événement", "en": "event"},
    "left": {"fr": "reste {}", "en": "{} left"},
    "before": {"fr": "avant", "en": "before"},
    "lapsed": {"fr": "EXPIRÉE", "en": "LAPSED"},
    "lapsed_note": {
        "fr": "Non confirmée à temps : la borne l'a abandonnée le",
        "en": "Not confirmed in time: the unit dropped it at",
    },
    "copy": {"fr": "Copier", "en": "Copy"},
    "copied": {"fr": "Copiée", "en": "Copied"},
    "selected": {"fr": "Sélectionnée : Ctrl+C", "en": "Selected: Ctrl+C"},
    "outputs": {"fr": "Sorties de l'armoire", "en": "Cabinet outputs"},
    "no_output": {"fr": "aucune", "en": "none"},
    "output_safe": {"fr": "au repos", "en": "safe"},
    "output_unknown": {"fr": "ÉTAT INCONNU", "en": "STATE UNKNOWN"},
    "output_never": {"fr": "pas encore d'état reçu", "en": "no state received yet"},
    "since": {"fr": "depuis", "en": "since"},
    "until": {"fr": "jusqu'à", "en": "until"},
    "overdue": {
        "fr": "retour au repos non reçu",
        "en": "return to safe not received",
    },
    "waiting_n": {"fr": "{} demande(s) en attente", "en": "{} request(s) waiting"},
    "role_viewer": {"fr": "opérateur (visionnage)", "en": "viewer"},
    "role_investigator": {"fr": "enquêteur (visionnage, export)", "en": "investigator"},
    "role_supervisor": {"fr": "superviseur", "en": "supervisor"},
    "role_admin": {"fr": "administrateur", "en": "administrator"},
}


def pick(requested: str | None) -> str:
    return requested if requested in LANGUAGES else DEFAULT


def text(key: str, lang: str) -> str:
    return _TEXT[key][lang]
