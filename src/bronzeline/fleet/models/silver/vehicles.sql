-- One row per registered tracking unit, with the names the reports use. The reference source keeps
-- no cost centre: each city's depot is its own cost centre.
SELECT d.imei,
       d.plate AS vehicle_number,
       d.vehicle_name,
       d.driver_name,
       d.city,
       d.city AS cost_centre,
       d.device_model,
       left(d.imei, 6) AS device_family,
       d.fuel_per_100km,
       d.odometer_km,
       d.sim_active
FROM bronze.devices d
