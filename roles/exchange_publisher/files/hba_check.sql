-- Every pg_hba rule that could admit the replication role over the network
-- must be hostssl, scram-sha-256 or cert, from within the subscriber addresses.
-- inet_merge(address, broadcast) turns (address, netmask) into a CIDR.
WITH r AS (
    SELECT line_number, type, database, user_name, address, netmask, auth_method, error,
           CASE WHEN address ~ '^[0-9A-Fa-f.:]+$' AND netmask IS NOT NULL
                THEN inet_merge(address::inet, (address::inet & netmask::inet) | ~netmask::inet)
           END AS net
      FROM pg_hba_file_rules),
 candidate AS (
    SELECT *, (type = 'hostssl' AND auth_method IN ('scram-sha-256', 'cert')
               AND net IS NOT NULL AND net <<= ANY (:'allowed'::inet[])) AS ok
      FROM r
     WHERE error IS NOT NULL
        OR (type <> 'local' AND user_name && ARRAY[:'role', 'all']))
SELECT json_build_object(
    'bad', coalesce(json_agg(json_build_object('line', line_number, 'type', type, 'user', user_name,
                                               'address', address, 'method', auth_method, 'error', error)
                             ORDER BY line_number) FILTER (WHERE NOT ok OR error IS NOT NULL), '[]'),
    'good', count(*) FILTER (WHERE ok AND error IS NULL))
  FROM candidate;
